"""The trained model as a thing to hand on: the model-zoo folder, run bundles, exports."""
