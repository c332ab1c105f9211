"""Camera capture and serial / HTTP / motion triggers for kiosk lookups."""
