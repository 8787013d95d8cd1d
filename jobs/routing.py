from django.urls import path

from . import consumers

websocket_urlpatterns = [
    path("ws/jobs/", consumers.UserJobsConsumer.as_asgi()),
    path("ws/jobs/<int:job_id>/", consumers.JobConsumer.as_asgi()),
]
