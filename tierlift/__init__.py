"""tierlift's operator wing: CLI, local cloud, demo and bootstrap helpers.

Imports the Lambda wing (``chalicelib``); the Lambda wing never imports this package, and it is
never bundled into the Lambda zip.
"""
