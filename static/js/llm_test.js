// A conversation form's "Test connection": asks the API (POST /api/conversations/llm-test/) to try the
// LLM fields as they are typed now, and says what answered or what is wrong, before anything is saved.
(function () {
  "use strict";

  function errorText(data) {
    if (data && typeof data.detail === "string") return data.detail;
    for (const messages of Object.values(data || {})) {
      if (Array.isArray(messages) && messages.length) return String(messages[0]);
    }
    return "The test could not be run: try again in a moment.";
  }

  for (const button of document.querySelectorAll("[data-llm-test]")) {
    const form = button.closest("form");
    const out = document.getElementById(button.getAttribute("aria-controls"));
    const value = (name) => (form.elements[name] ? form.elements[name].value.trim() : "");
    button.addEventListener("click", async () => {
      const body = { llm_base_url: value("llm_base_url"), llm_model: value("llm_model"), llm_api_key: value("llm_api_key") };
      if (button.dataset.conversation) body.conversation = Number(button.dataset.conversation);
      button.disabled = true;
      out.className = "note";
      out.textContent = "Asking the model…";
      try {
        const response = await fetch(button.dataset.llmTest, {
          method: "POST", credentials: "same-origin",
          headers: { "Content-Type": "application/json", "X-CSRFToken": value("csrfmiddlewaretoken") },
          body: JSON.stringify(body),
        });
        const data = await response.json().catch(() => ({}));
        if (response.ok) {
          out.className = "ok";
          out.textContent = `Connected: ${data.model} answered in ${data.first_token_seconds.toFixed(2)} s.`;
        } else {
          out.className = "error";
          out.textContent = errorText(data);
        }
      } catch (error) {
        out.className = "error";
        out.textContent = "The platform could not be reached: check your connection and try again.";
      } finally {
        button.disabled = false;
      }
    });
  }
})();
