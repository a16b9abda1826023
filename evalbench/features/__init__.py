"""Frozen features: extraction (:func:`extract_features`) and the stored artifact (:class:`Features`)."""
from evalbench.features.artifact import Features, FeaturesCorruptError, features_exist, load_features, save_features
from evalbench.features.extract import ExtractionError, extract_features

__all__ = ["Features", "FeaturesCorruptError", "features_exist", "load_features", "save_features",
           "ExtractionError", "extract_features"]
