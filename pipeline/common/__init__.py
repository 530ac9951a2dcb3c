"""Pieces shared by the stages: params and policy models, file I/O, offline set-up."""
