"""Hydra start-up (schemas, resolvers, the plugin folder, sampler configs) and the Hydra
callbacks that check a config and name and summarise a sweep."""
