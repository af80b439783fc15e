"""`make bench`: our runtime against LangGraph, one table. See benchmarks/__main__.py."""
