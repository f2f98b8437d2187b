"""Datasets: the catalog (files, URLs, checksums), readers, in-memory / streaming datasets,
device-resident batching and batched augmentation."""

from cnnlab.data.augment import Augment
from cnnlab.data.catalog import (
                                 CATALOG,
                                 DatasetSpec,
                                 dataset_dir,
                                 dataset_status,
                                 ensure_dataset,
                                 get_spec,
                                 list_datasets,
                                 safe_extract,
                                 verify_dataset,
)
from cnnlab.data.dataset import (
                                 ArrayDataset,
                                 FolderDataset,
                                 channel_stats,
                                 load_dataset,
                                 stratified_subset,
)
from cnnlab.data.formats import read_image
from cnnlab.data.loader import DeviceLoader, StreamLoader, make_loader, to_model_input

__all__ = ["CATALOG", "ArrayDataset", "Augment", "DatasetSpec", "DeviceLoader", "FolderDataset",
           "StreamLoader", "channel_stats", "dataset_dir", "dataset_status", "ensure_dataset",
           "get_spec", "list_datasets", "load_dataset", "make_loader", "read_image",
           "safe_extract", "stratified_subset", "to_model_input", "verify_dataset"]
