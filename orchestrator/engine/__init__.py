"""The engine around the pure core: the daemon loop, the Redis store and its Lua step, the
relay, and the loading of saga modules. It imports nothing from the ops tools or the samples."""
