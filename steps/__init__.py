"""nyc-taxi-duration: MLflow Project steps for NYC TLC trip-duration models.

Entry-point modules (``preprocess``, ``hpo``) import the shared modules (``tlc``,
``features``, ``models``, ``tracking``, ``cli``); shared modules never import entry points.
"""
