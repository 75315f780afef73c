"""backend="auto": serial, threads or processes, chosen per function by measuring it (see backend.py)."""
