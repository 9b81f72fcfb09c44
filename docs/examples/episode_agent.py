"""A complete external agent for EMRGym's episode API: any OpenAI-compatible model, on the typed client.

    emrgym serve --port 8080 --token "$EMRGYM_TOKEN" &   # the episode API, recording in runs/episodes
    OPENAI_BASE_URL=http://127.0.0.1:8000/v1 MODEL=my-model python3 episode_agent.py mab-lookup-001

Operator token (create, end, grade) and episode token (tools, REST, guidance, finish) kept apart.
"""
import json
import os
import sys
from pathlib import Path

import requests

sys.path.append(str(Path(__file__).resolve().parents[2] / "clients" / "python"))  # or: pip install clients/python
from emrgym_client import Client, EmrgymError  # noqa: E402

llm = os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1")
headers = {"Authorization": f"Bearer {os.environ.get('OPENAI_API_KEY', 'none')}"}
emr = Client(os.environ.get("EMRGYM_URL", "http://127.0.0.1:8080"), token=os.environ.get("EMRGYM_TOKEN"))
ep = emr.create_episode(sys.argv[1], mode="guided" if "--guided" in sys.argv else "flat")
messages = [{"role": "system", "content": ep.prompt}]
for turn in range(ep.max_steps):  # at most one turn per allowed step
    if ep.result:
        break  # `finish` was called
    if ep.mode == "guided" and (steps := ep.guidance().next):
        messages.append({"role": "user", "content": "Next: " + " | ".join(steps)})  # never an unearned branch
    body = {"model": os.environ.get("MODEL", "gpt-4o-mini"), "messages": messages, "tools": ep.tools}
    reply = requests.post(f"{llm}/chat/completions", json=body, headers=headers, timeout=600)
    reply.raise_for_status()
    message = reply.json()["choices"][0]["message"]
    messages.append(message)
    if not message.get("tool_calls"):  # the episode ends only through the `finish` tool
        messages.append({"role": "user", "content": "Use the tools, and call finish when you are done."})
    for call in message.get("tool_calls") or []:
        try:  # runs in the episode's sandbox; a failed call is an OperationOutcome the model sees
            content = ep.call_tool(call["function"]["name"], json.loads(call["function"]["arguments"] or "{}")).text
        except (EmrgymError, ValueError) as e:
            content = getattr(e, "body", str(e))
        messages.append({"role": "tool", "tool_call_id": call["id"], "content": content})
result = ep.close()  # graded (as stopped if unfinished), recorded
print(json.dumps({"instance": ep.instance, "trial": ep.trial, "end": result.end, "success": result.success, "progress": result.progress}))
