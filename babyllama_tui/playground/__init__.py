"""The Playground's connection to `babyllama serve`, without widgets."""
