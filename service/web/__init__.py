"""The HTTP surface: the front door, the classify endpoints, the routes, parsing, the OpenAPI document."""
