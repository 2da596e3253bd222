"""decaylab: weight decay, L1 and early stopping, predicted from the Hessian and measured."""

__version__ = "0.1.0"
