class ServiceError(Exception):
    """The user asked for something that cannot be done. The message says what and what to do instead;
    views and the API turn it into a 400 with that message."""
