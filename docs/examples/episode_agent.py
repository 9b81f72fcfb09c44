"""A complete external agent for EMRGym's episode API: any OpenAI-compatible model, `requests` only.

    emrgym serve --port 8080 --token "$EMRGYM_TOKEN" &   # the episode API, recording in runs/episodes
    OPENAI_BASE_URL=http://127.0.0.1:8000/v1 MODEL=my-model python3 episode_agent.py mab-lookup-001

The harness part (operator token: create the episode, read the grade) and the agent part (the
episode's own token only: tools, REST, finish) are kept apart, as a benchmark must keep them.
"""
import json
import os
import sys

import requests

emr = os.environ.get("EMRGYM_URL", "http://127.0.0.1:8080")
llm = os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1")
headers = {"Authorization": f"Bearer {os.environ.get('OPENAI_API_KEY', 'none')}"}
operator = {"Authorization": f"Bearer {os.environ['EMRGYM_TOKEN']}"} if os.environ.get("EMRGYM_TOKEN") else {}
mode = "guided" if "--guided" in sys.argv else "flat"

ep = requests.post(f"{emr}/episodes", json={"instance": sys.argv[1], "mode": mode}, headers=operator).json()
me = {"Authorization": f"Bearer {ep['token']}"}  # all the agent holds: this episode's capability
messages = [{"role": "system", "content": ep["prompt"]}]
for turn in range(ep["max_steps"]):  # at most one turn per allowed step
    if requests.get(f"{emr}/episodes/{ep['id']}", headers=me).json()["status"] != "active":
        break  # `finish` was called
    if mode == "guided" and (steps := requests.get(ep["guidance_url"], headers=me).json()["next"]):
        messages.append({"role": "user", "content": "Next: " + " | ".join(steps)})  # never an unearned branch
    body = {"model": os.environ.get("MODEL", "gpt-4o-mini"), "messages": messages, "tools": ep["tools"]}
    reply = requests.post(f"{llm}/chat/completions", json=body, headers=headers, timeout=600)
    reply.raise_for_status()
    message = reply.json()["choices"][0]["message"]
    messages.append(message)
    if not message.get("tool_calls"):  # the episode ends only through the `finish` tool
        messages.append({"role": "user", "content": "Use the tools, and call finish when you are done."})
    for call in message.get("tool_calls") or []:
        name, args = call["function"]["name"], call["function"]["arguments"] or "{}"
        result = requests.post(ep["tool_url"].format(name=name), data=args, headers={**me, "Content-Type": "application/json"})
        messages.append({"role": "tool", "tool_call_id": call["id"], "content": result.text})
result = requests.delete(f"{emr}/episodes/{ep['id']}", headers=operator).json()  # the operator: graded (stopped if unfinished), recorded
print(json.dumps({k: result[k] for k in ("instance", "trial", "end", "success", "progress")}))
