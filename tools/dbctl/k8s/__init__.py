"""Kubernetes: the manifests of k8s/dev (render) and running their Jobs with kubectl (jobs).

Imports: the engine and the foundation.
"""
