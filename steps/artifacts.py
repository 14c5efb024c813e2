"""Artifact paths: the written contract between steps (who writes what, who reads it)."""

# preprocess writes, hpo (and later steps) read
DATA_DIR = "data"
FEATURIZER_PATH = "featurizer/featurizer.json"
# hpo writes on its parent run
BEST_PARAMS_PATH = "best_params.json"


def split_path(split: str) -> str:
    """Cleaned split ``train``/``val``/``test`` of a preprocess run."""
    return f"{DATA_DIR}/{split}.parquet"
