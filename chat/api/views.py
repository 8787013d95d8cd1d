from django.db.models import Prefetch
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from avatars.uploads import upload_too_large_message
from core.parsers import UPLOAD_PARSERS

from ..models import Chunk
from ..selectors import conversations_visible_to, voices_visible_to
from ..services import (
    UNCHANGED,
    conversation_create,
    conversation_delete,
    conversation_update,
    llm_connection_test,
    message_send,
    reply_stop,
    voice_create,
    voice_delete,
)
from .serializers import (
    ConversationSerializer,
    LLMTestResultSerializer,
    LLMTestSerializer,
    MessageSendSerializer,
    MessageSerializer,
    VoiceCreateSerializer,
    VoiceSerializer,
)  # fmt: skip


class VoiceViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):  # fmt: skip
    """Your voices. Create one with a multipart upload: name, language, recording, consent."""

    serializer_class = VoiceSerializer
    parser_classes = UPLOAD_PARSERS

    def get_queryset(self):
        return voices_visible_to(self.request.user)

    @extend_schema(request={"multipart/form-data": VoiceCreateSerializer}, responses={201: VoiceSerializer})
    def create(self, request, *args, **kwargs):
        body = VoiceCreateSerializer(data=request.data)
        valid = body.is_valid()
        if getattr(request._request, "upload_too_large", False):
            raise ValidationError({"recording": [upload_too_large_message()]})
        if not valid:
            raise ValidationError(body.errors)
        data = body.validated_data
        voice = voice_create(
            owner=request.user, name=data["name"], language=data["language"], recording=data["recording"],
            consent=data["consent"],
        )  # fmt: skip
        return Response(VoiceSerializer(voice).data, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance):
        voice_delete(voice=instance)


class ConversationViewSet(viewsets.ModelViewSet):
    """Your conversations with your avatars. LLM fields left blank use the platform's settings."""

    serializer_class = ConversationSerializer
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        return conversations_visible_to(self.request.user)

    def perform_create(self, serializer):
        data = serializer.validated_data
        serializer.instance = conversation_create(
            owner=self.request.user, avatar=data["avatar_id"], voice=data.get("voice_id"),
            language=data.get("language", ""), title=data.get("title", ""),
            system_prompt=data.get("system_prompt", ""), llm_base_url=data.get("llm_base_url", ""),
            llm_model=data.get("llm_model", ""), llm_api_key=data.get("llm_api_key", ""),
        )  # fmt: skip

    def perform_update(self, serializer):
        data = serializer.validated_data
        if "avatar_id" in data and data["avatar_id"] != serializer.instance.avatar_id:
            raise ValidationError({"avatar": ["A conversation keeps its avatar: start a new one instead."]})
        fields = ["language", "title", "system_prompt", "llm_base_url", "llm_model", "llm_api_key"]
        changes = {name: data.get(name, UNCHANGED) for name in fields}
        changes["voice"] = data.get("voice_id", UNCHANGED)
        serializer.instance = conversation_update(conversation=serializer.instance, **changes)

    def perform_destroy(self, instance):
        conversation_delete(conversation=instance)

    @extend_schema(
        request=LLMTestSerializer, responses=LLMTestResultSerializer,
        description="Try the LLM endpoint, model and key a conversation would use (blank: the platform's) "
        "with one short question; 400 says what is wrong and what to do.",
    )  # fmt: skip
    @action(detail=False, methods=["post"], url_path="llm-test")
    def llm_test(self, request):
        """Try an LLM endpoint, model and key before saving a conversation."""
        body = LLMTestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        conversation = None
        if data["conversation"] is not None:
            conversation = self.get_queryset().filter(pk=data["conversation"]).first()
            if conversation is None:  # someone else's, or none: the same answer
                raise ValidationError({"conversation": ["No such conversation."]})
        return Response(
            llm_connection_test(
                base_url=data["llm_base_url"], model=data["llm_model"], api_key=data["llm_api_key"],
                conversation=conversation,
            )
        )  # fmt: skip

    @extend_schema(
        methods=["get"],
        request=None,
        responses=MessageSerializer(many=True),
        description="The conversation's turns in order, each reply with its chunks (text, speech, timings).",
    )
    @extend_schema(
        methods=["post"],
        request={"multipart/form-data": MessageSendSerializer, "application/json": MessageSendSerializer},
        responses={202: MessageSerializer},
        description="Say something (text, or a recording as multipart `audio`). Answers 202 with the pending "
        "reply; its `job` makes it: follow /ws/chat/<conversation>/ or poll the messages.",
    )  # fmt: skip
    @action(detail=True, methods=["get", "post"], parser_classes=UPLOAD_PARSERS)
    def messages(self, request, pk=None):
        conversation = self.get_object()
        if request.method == "POST":
            body = MessageSendSerializer(data=request.data)
            valid = body.is_valid()
            if getattr(request._request, "upload_too_large", False):
                raise ValidationError({"audio": [upload_too_large_message()]})
            if not valid:
                raise ValidationError(body.errors)
            reply = message_send(
                conversation=conversation, text=body.validated_data.get("text", ""),
                audio=body.validated_data.get("audio"),
            )  # fmt: skip
            return Response(MessageSerializer(reply).data, status=status.HTTP_202_ACCEPTED)
        turns = (
            conversation.messages.filter(withdrawn=False)
            .order_by("created_at", "id")
            .prefetch_related(Prefetch("chunks", queryset=Chunk.objects.order_by("index")))
        )
        page = self.paginate_queryset(turns)
        return self.get_paginated_response(MessageSerializer(page, many=True).data)

    @extend_schema(request=None, responses=MessageSerializer)
    @action(detail=True, methods=["post"])
    def stop(self, request, pk=None):
        """Stop the reply being made: the sentences already spoken stay."""
        conversation = self.get_object()
        reply = conversation.messages.filter(role="assistant").select_related("job").order_by("-id").first()
        if reply is None:
            raise ValidationError({"detail": "Nothing has been said yet."})
        return Response(MessageSerializer(reply_stop(reply=reply)).data)
