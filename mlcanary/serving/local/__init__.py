"""The local backend: model-server processes speaking KServe's V1 and V2 protocols, fronted by Envoy."""
