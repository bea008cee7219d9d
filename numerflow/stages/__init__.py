"""The pipeline's stages, one module each. They live in a subpackage so that `numerflow.stages.train`,
`numerflow.stages.predict`, ... stay the Python API's functions even after these modules are imported."""
