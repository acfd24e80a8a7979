"""The actor runtime and the streaming pipeline's actors (segmenter, scheduler, inference,
chunker, metrics) that exchange messages over bounded queues."""
