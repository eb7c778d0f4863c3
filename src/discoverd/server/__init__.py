"""The registry server: an HTTP/1.1 front (``http``), the protocol handlers (``app``) and the process
lifecycle (``runner``)."""
