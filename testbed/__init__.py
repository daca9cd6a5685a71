"""What the tests and the benchmarks both need, so that neither imports the other: synthetic
DICOM data (``synthetic``), a real gunicorn (``server``) and nginx (``nginx``) on free loopback
ports, request bodies and an independent reader of multipart answers (``messages``), a scratch
PostgreSQL schema (``postgres``), and slow clients (``slow_clients``)."""
