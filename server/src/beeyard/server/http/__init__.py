"""HTTP plumbing shared by every API family: envelope, routing, middleware."""
