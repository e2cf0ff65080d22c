"""The FastAPI head node. Nothing imports this package; uvicorn loads it by path."""
