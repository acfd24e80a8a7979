"""Load generators for the streaming server (the Locust file and the asyncio driver live here)."""
