"""What the Corpora screen lists and the jobs it runs, without widgets."""
