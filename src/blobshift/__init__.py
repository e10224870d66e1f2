"""blobshift: move a blob store between S3 backends while the application keeps serving."""

__version__ = "0.1.0"
