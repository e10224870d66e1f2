"""The built-in local lab: real SeaweedFS S3 servers on loopback addresses, seed data."""
