"""The staff dashboard: server-rendered pages under /dashboard/ and the WebSocket of their live job progress."""
