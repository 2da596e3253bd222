"""Curvature of PyTorch models: Hessian and Gauss-Newton operators, eigenpairs, trace, diagonal, density."""
