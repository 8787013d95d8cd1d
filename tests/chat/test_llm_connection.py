"""The conversation form's "Test connection" (POST /api/conversations/llm-test/, chat.services
llm_connection_test): the endpoint, model and key a conversation would use answer one short question
before anything is saved; what is wrong is said in words; another person's conversation (and its key) is
never used. The LLM is the suite's loopback OpenAI-compatible server (a paid API is the edge of the world)."""

# ruff: noqa: F811  (the fixtures imported from the other chat tests are parameters here)

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

from chat import services
from tests.chat.test_llm import llm_server, public_host  # noqa: F401
from tests.chat.test_llm_safety import llm_settings  # noqa: F401
from tests.chat.test_services import make_avatar

URL = "/api/conversations/llm-test/"


def api_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.mark.django_db
def test_the_platforms_model_answers_with_its_key(alice, llm_settings, llm_server):
    response = api_for(alice).post(URL, {}, format="json")
    assert response.status_code == 200, response.content
    answer = response.json()
    assert answer["ok"] is True and answer["model"] == "glm-test" and answer["own_endpoint"] is False
    assert answer["answer"] == "Hello" and answer["first_token_seconds"] >= 0
    (request,) = llm_server.requests
    assert request["auth"] == "Bearer sk-platform-secret" and request["body"]["model"] == "glm-test"


@pytest.mark.django_db
def test_what_is_wrong_is_said(alice, llm_settings, llm_server, settings):
    llm_server.mode = 401
    response = api_for(alice).post(URL, {"llm_model": "glm-other"}, format="json")
    assert response.status_code == 400 and "API key" in response.json()["detail"], response.content
    assert llm_server.requests[-1]["body"]["model"] == "glm-other"
    # An own endpoint on a private address, or without its own key: refused before anything is sent.
    sent = len(llm_server.requests)
    loopback = f"http://127.0.0.1:{llm_server.server_port}/v1/"
    refused = api_for(alice).post(URL, {"llm_base_url": loopback, "llm_api_key": "sk-mine"}, format="json")
    assert refused.status_code == 400 and "public" in refused.json()["detail"], refused.content
    keyless = api_for(alice).post(URL, {"llm_base_url": "https://llm.example.org/v1/"}, format="json")
    assert keyless.status_code == 400 and "needs its own API key" in keyless.json()["detail"]
    assert len(llm_server.requests) == sent
    # No model on the platform and none given: what to do instead.
    settings.CHAT_LLM_BASE_URL = ""
    unset = api_for(alice).post(URL, {}, format="json")
    assert unset.status_code == 400 and "no language model set up" in unset.json()["detail"]


@pytest.mark.django_db
def test_a_saved_own_key_is_used_only_in_its_owners_conversation(
    alice, bob, llm_settings, llm_server, public_host
):
    public_host.add("llm.example.com")
    own_url = f"http://llm.example.com:{llm_server.server_port}/v1/"
    mine = services.conversation_create(
        owner=alice, avatar=make_avatar(alice), llm_base_url=own_url, llm_model="own-model",
        llm_api_key="sk-alice-own",
    )  # fmt: skip
    body = {"llm_base_url": own_url, "llm_model": "own-model", "conversation": mine.pk}
    response = api_for(alice).post(URL, body, format="json")
    assert response.status_code == 200 and response.json()["own_endpoint"] is True, response.content
    assert llm_server.requests[-1]["auth"] == "Bearer sk-alice-own"
    # Bob names alice's conversation: not found, and her key is not sent anywhere.
    sent = len(llm_server.requests)
    theirs = api_for(bob).post(URL, body, format="json")
    assert theirs.status_code == 400 and theirs.json() == {"conversation": ["No such conversation."]}
    assert len(llm_server.requests) == sent


@pytest.mark.django_db
def test_the_forms_say_whether_the_platforms_model_is_set_up(alice, settings):
    page = Client()
    page.force_login(alice)
    settings.CHAT_LLM_BASE_URL, settings.CHAT_LLM_API_KEY = "https://open.bigmodel.cn/api/paas/v4/", "sk-x"
    html = page.get("/chat/new/").content.decode()
    assert "language model is set up" in html and 'data-llm-test="/api/conversations/llm-test/"' in html
    settings.CHAT_LLM_API_KEY = ""
    html = page.get("/chat/new/").content.decode()
    assert "no language model set up yet" in html
    conversation = services.conversation_create(owner=alice, avatar=make_avatar(alice))
    html = page.get(f"/chat/{conversation.pk}/").content.decode()
    assert f'data-conversation="{conversation.pk}"' in html and "js/llm_test.js" in html
