"""The ML model code: pipeline builders the training flow names in config (``model.factory``)."""
