"""This project's own ``service`` package, holding its app."""
