"""rtsim: a fake OpenAI Realtime server with fault injection."""
