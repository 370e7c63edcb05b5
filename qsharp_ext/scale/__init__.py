"""Scale-out on existing engines: Ray actors for roll-outs and evaluation, vLLM for π_ref's own sampling,
Accelerate for data-parallel training. Each engine is optional (extras `ray`, `vllm`; Accelerate comes with
`gguf`) and imported only when asked for; the local code path is the one every engine calls into.
"""
