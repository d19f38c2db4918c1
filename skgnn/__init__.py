"""skgnn: crystal graph neural networks as scikit-learn estimators."""

from .classifier import CGCNNClassifier
from .graphs import CrystalGraph, CrystalGraphs
from .message import MessageNet
from .module import CGCNN, CGConv
from .regressor import CGCNNRegressor
from .store import GraphStore, write_graph_store
from .transformer import CrystalGraphTransformer

__all__ = [
    "CGCNN",
    "CGCNNClassifier",
    "CGCNNRegressor",
    "CGConv",
    "CrystalGraph",
    "CrystalGraphTransformer",
    "CrystalGraphs",
    "GraphStore",
    "MessageNet",
    "write_graph_store",
]
__version__ = "0.1.0"
