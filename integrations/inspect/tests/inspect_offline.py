"""`python3 inspect_offline.py ARGS` runs Inspect's CLI (`inspect ARGS`) with one change for
offline tests: token counts are estimated as len/4 instead of with tiktoken's o200k_base table,
which tiktoken downloads on first use (mockllm counts the tokens of every reply)."""

import inspect_ai.model._model as _model


def offline_count_text_tokens(text: str) -> int:
    return max(1, len(text) // 4)


_model.count_text_tokens = offline_count_text_tokens

if __name__ == "__main__":
    from inspect_ai._cli.main import main

    main()
