"""The language model in use: prompts and conversations in, sampled tokens and text out.
Chat templates, the sampler, stop rules, the generate loop, chat sessions, `LanguageModel`."""
