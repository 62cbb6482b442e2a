"""Publishing: the transports that carry each update's rendered metrics to the guests."""
