"""gl.data: datasets, the DataLoader, splits, bundled and synthetic datasets, file loaders,
standardization and augmentation."""
from .augment import GaussianNoise, RandomShift, smote
from .dataset import Dataset, Subset, TensorDataset, dataset_arrays, random_split
from .datasets import load_digits, make_circles, make_moons, make_spirals
from .files import DataFormatError, load_csv, load_idx, load_npz, read_idx
from .loader import DataLoader, default_collate
from .preprocessing import StandardScaler
from .registry import load_dataset
from .splits import KFold, RepeatedKFold, stratified_indices, train_test_split

__all__ = ["Dataset", "TensorDataset", "Subset", "DataLoader", "default_collate",
           "random_split", "dataset_arrays", "train_test_split", "stratified_indices", "KFold",
           "RepeatedKFold", "load_digits", "make_spirals", "make_moons", "make_circles",
           "load_csv", "load_npz", "load_idx", "read_idx", "DataFormatError", "load_dataset",
           "StandardScaler", "GaussianNoise", "RandomShift", "smote"]
