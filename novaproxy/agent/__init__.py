"""The novaproxy host agent: delivers requests to the guests of one compute host."""
