"""The staff dashboard (server-rendered pages under /dashboard/); live progress comes from ingestion.consumers."""
