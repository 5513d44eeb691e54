"""The generation thread: every request's prompt is prepared and its answer generated here.

One thread owns the model (under its lock), so the event loop only moves bytes. Requests
that arrive together are taken together: the greedy ones (temperature 0, no repetition
penalty) go through `model.generate` as one left-padded batch, which reads the weights once
per step for all of them; the others (sampling, with its own seeded generator per request)
run one at a time through studio.core.generation as before. A batched answer is the same
text as the answer alone (tests/test_serve_batching.py): each row keeps its own stop
strings, stop tokens and `max_tokens`, and leaves the batch when it is done.

Results go back to the event loop through `Job.events`, an asyncio queue: ("ready",) once
the prompt is accepted, ("piece", text) while streaming, then ("end",) or ("error", ApiError).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time

from studio.core.errors import StudioError
from studio.core.generation import IncrementalDecoder, PromptTooLong, StopMatcher
from studio.core.train import CancelToken
from studio.serve import protocol as api
from studio.serve.limits import prompt_floor

log = logging.getLogger("studio.serve")
MAX_BATCH = 16
GATHER_S = 0.005
"""After a request arrives, how long to wait for another to batch with it (each one that
arrives restarts the wait, up to MAX_GATHER_S)."""
MAX_GATHER_S = 0.02
EMBED_BATCH = 16


def shutting_down() -> api.ApiError:
    return api.ApiError(503, "the server is shutting down", type="server_error")


class Job:
    """One request's work: a chat or completion answer, or embeddings."""

    def __init__(self, kind: str, request=None, *, inputs: list[str] | None = None):
        self.kind = kind  # "chat", "complete" or "embed"
        self.request: api.Request | None = request
        self.inputs = inputs
        self.stream = bool(request is not None and request.stream)
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancel = CancelToken()
        self.gen = None
        self.ready = False
        """Whether ("ready",) was posted: the prompt is accepted and the answer under way."""
        self.vectors: list[list[float]] = []
        self.tokens = 0

    def post(self, *event) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the event loop has closed: nobody waits for this any more
            pass

    @property
    def greedy(self) -> bool:
        s = self.request.settings if self.request is not None else None
        return s is not None and s.temperature == 0 and s.repetition_penalty == 1.0


class Engine:
    def __init__(self, model, stopping: threading.Event):
        self.model = model
        self.stopping = stopping
        self.queue: queue.Queue[Job | None] = queue.Queue()
        self.active: set[Job] = set()
        self.guard = threading.Lock()
        self.closed = False
        self.thread: threading.Thread | None = None
        self.batches = 0
        """Batches of two or more generated so far (for tests and benchmarks)."""

    def start(self) -> None:
        self.closed = False
        self.thread = threading.Thread(target=self._loop, name="studio-generate", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> None:
        with self.guard:
            if not self.closed and not self.stopping.is_set():
                self.active.add(job)
                self.queue.put(job)
                return
        job.post("error", shutting_down())

    def done(self, job: Job) -> None:
        """The request is over (answered or its client gone): stop its work if any is left."""
        job.cancel.cancel()
        with self.guard:
            self.active.discard(job)

    def cancel_all(self) -> None:
        with self.guard:
            jobs = list(self.active)
        for job in jobs:
            job.cancel.cancel()

    def stop(self) -> None:
        """Cancel everything and end the thread (after its current step)."""
        self.cancel_all()
        if self.thread is not None:
            self.queue.put(None)
            self.thread.join()
            self.thread = None

    # -- the thread ----------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            while (job := self.queue.get()) is not None:
                # Gathered under the lock: what queued up while the weights were busy (with
                # the last batch, or a chat page sharing them) is all taken at once.
                with self.model.lock:
                    jobs = [job] + (self._gather() if job.greedy else [])
                    self._run([j for j in jobs if j is not None])
                if None in jobs:
                    break
        finally:
            with self.guard:
                self.closed = True
            while True:  # whatever is still queued is answered, not left waiting
                try:
                    job = self.queue.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    job.post("error", shutting_down())

    def _gather(self) -> list:
        more, start = [], time.monotonic()
        while len(more) < MAX_BATCH - 1:
            wait = min(GATHER_S, MAX_GATHER_S - (time.monotonic() - start))
            try:
                job = self.queue.get(timeout=wait) if wait > 0 else self.queue.get_nowait()
            except queue.Empty:
                break
            more.append(job)
            if job is None:
                break
        return more

    def _run(self, jobs: list[Job]) -> None:
        """Under the model's lock: prepare the jobs, the greedy ones as one batch, the rest
        one at a time."""
        model = self.model
        model.shared.activate(model.adapter_name)
        ready = [j for j in jobs if self._prepare(j)]
        batch = [j for j in ready if j.greedy]
        if len(batch) >= 2:
            batch = self._fitting(batch)
        if len(batch) >= 2:
            self._batch(batch)
        for job in ready:
            if len(batch) < 2 or job not in batch:
                self._alone(job)

    def _prepare(self, job: Job) -> bool:
        """Tokenize and check the prompt (in this thread: a fast tokenizer is not to be used
        from two threads at once); False when the job was answered with an error instead."""
        if job.cancel.cancelled:
            return False
        if self.stopping.is_set():
            job.post("error", shutting_down())
            return False
        try:
            if job.kind == "embed":
                return self._prepare_embed(job)
            self._prepare_answer(job)
            return True
        except api.ApiError as e:
            job.post("error", e)
        except StudioError as e:
            job.post("error", api.bad_request(str(e), e.field))
        except Exception as e:
            log.exception("preparing a request failed")
            job.post("error", api.ApiError(500, f"internal error: {e}", type="server_error"))
        return False

    def _prepare_answer(self, job: Job) -> None:
        model, req = self.model, job.request
        context, wanted = model.context_length, req.settings.max_new_tokens
        where = "messages" if req.messages else "prompt"
        try:
            floor = prompt_floor(model.tokenizer, req.text, context) if context else None
            if floor:
                raise PromptTooLong(
                    f"the prompt is more than {floor} tokens; this model's context holds "
                    f"{context}. Shorten the conversation or start a new one."
                )
            if job.kind == "chat":
                gen = model.chat(req.messages, req.settings, job.cancel)
            else:
                gen = model.complete(req.prompt, req.settings, job.cancel)
        except PromptTooLong as e:
            raise api.bad_request(str(e), where, "context_length_exceeded") from None
        if context and req.max_tokens_given and gen.prompt_tokens + wanted > context:
            raise api.bad_request(
                f"the prompt is {gen.prompt_tokens} tokens and max_tokens asks for {wanted} "
                f"more, but this model's context holds {context}: ask for at most "
                f"{context - gen.prompt_tokens}",
                "max_tokens",
                "context_length_exceeded",
            )
        job.gen = gen

    def _alone(self, job: Job) -> None:
        if job.kind == "embed":
            self._embed(job)
            return
        if not job.ready:
            job.ready = True
            job.post("ready")
        try:
            for piece in job.gen:
                if job.stream:
                    job.post("piece", piece)
        except StudioError as e:
            job.post("error", api.bad_request(str(e), e.field))
            return
        except Exception as e:
            log.exception("generating an answer failed")
            job.post("error", api.ApiError(500, f"internal error: {e}", type="server_error"))
            return
        job.post("end")

    # -- batches -------------------------------------------------------------------------

    def _fitting(self, jobs: list[Job]) -> list[Job]:
        """The jobs that can share a batch: every row gets as many steps as the longest asks
        for (the extra ones are dropped), and must still fit the context."""
        context = self.model.context_length
        steps = max(j.gen.max_new_tokens for j in jobs)
        if not context:
            return jobs
        return [j for j in jobs if j.gen.prompt_tokens + steps <= context]

    def _batch(self, jobs: list[Job]) -> None:
        import torch
        from transformers import GenerationConfig, StoppingCriteriaList

        model, tokenizer = self.model, self.model.tokenizer
        net = model.model
        device = next(net.parameters()).device
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        width = max(j.gen.prompt_tokens for j in jobs)
        ids = [[pad] * (width - j.gen.prompt_tokens) + j.gen.prompt_ids for j in jobs]
        mask = [[0] * (width - j.gen.prompt_tokens) + [1] * j.gen.prompt_tokens for j in jobs]
        rows = Rows(jobs, tokenizer, model.stop_ids)
        config = GenerationConfig(
            do_sample=False,
            max_new_tokens=max(j.gen.max_new_tokens for j in jobs),
            pad_token_id=pad,
            eos_token_id=None,  # the rows stop themselves (stop ids, stop strings, length)
            repetition_penalty=1.0,
            num_beams=1,
        )
        self.batches += 1
        for job in jobs:
            job.ready = True
            job.post("ready")
        # generate fills what a config leaves unset from the model's own (its EOS would stop
        # rows behind their backs): for the batch, the model has no defaults but these.
        base = net.get_base_model() if hasattr(net, "get_base_model") else net
        saved, base.generation_config = base.generation_config, GenerationConfig()
        start = time.perf_counter()
        try:
            with torch.inference_mode():
                net.generate(
                    input_ids=torch.tensor(ids, device=device),
                    attention_mask=torch.tensor(mask, device=device),
                    generation_config=config,
                    stopping_criteria=StoppingCriteriaList([rows]),
                )
        except Exception as e:
            if "out of memory" in str(e).lower() and not any(j.gen.completion_ids for j in jobs):
                # Too big a batch for the device: nothing is lost yet, so each goes alone.
                log.warning(
                    "a batch of %d did not fit in memory; answering one at a time", len(jobs)
                )
                base.generation_config = saved
                _free_device_memory()
                for job in jobs:
                    self._alone(job)
                return
            log.exception("generating a batch failed")
            rows.fail(api.ApiError(500, f"internal error: {e}", type="server_error"))
        finally:
            base.generation_config = saved
        rows.finish(time.perf_counter() - start)

    # -- embeddings ----------------------------------------------------------------------

    def _prepare_embed(self, job: Job) -> bool:
        tokenizer, context = self.model.tokenizer, self.model.context_length
        job.ids = []
        for i, text in enumerate(job.inputs):
            floor = prompt_floor(tokenizer, text, context) if context else None
            ids = [] if floor else tokenizer(text)["input_ids"]
            if floor or (context and len(ids) > context):
                n = f"more than {floor}" if floor else str(len(ids))
                raise api.bad_request(
                    f"input[{i}] is {n} tokens; this model's context holds {context}",
                    "input",
                    "context_length_exceeded",
                )
            if not ids:
                raise api.bad_request(f"input[{i}] is empty", "input")
            job.ids.append(ids)
        return True

    def _embed(self, job: Job) -> None:
        """The mean of the last hidden state over each input's tokens."""
        import torch

        net = self.model.model
        device = next(net.parameters()).device
        try:
            for at in range(0, len(job.ids), EMBED_BATCH):
                if job.cancel.cancelled:
                    return
                part = job.ids[at : at + EMBED_BATCH]
                width = max(len(ids) for ids in part)
                ids = torch.tensor([ids + [0] * (width - len(ids)) for ids in part], device=device)
                mask = torch.tensor(
                    [[1] * len(ids) + [0] * (width - len(ids)) for ids in part], device=device
                )
                with torch.inference_mode():
                    out = net(input_ids=ids, attention_mask=mask, output_hidden_states=True)
                    hidden = out.hidden_states[-1].float()
                    weights = mask.unsqueeze(-1).to(hidden.dtype)
                    mean = (hidden * weights).sum(1) / weights.sum(1)
                job.vectors += mean.cpu().tolist()
            job.tokens = sum(len(ids) for ids in job.ids)
        except Exception as e:
            log.exception("embedding failed")
            job.post("error", api.ApiError(500, f"internal error: {e}", type="server_error"))
            return
        job.post("end")


def _free_device_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Rows:
    """The rows of a batch, as a stopping criterion of `model.generate`: after each step it
    reads every row's new token exactly as studio.core.generation does for one answer
    (stop ids, stop strings held back, max_tokens, cancellation), sends its text on, and
    tells generate which rows are done."""

    def __init__(self, jobs: list[Job], tokenizer, stop_ids):
        self.jobs = jobs
        self.stop_ids = set(stop_ids)
        self.decoders = [IncrementalDecoder(tokenizer) for _ in jobs]
        self.matchers = [StopMatcher(j.gen.stop_strings) for j in jobs]
        self.finished = [False] * len(jobs)
        for job in jobs:
            job.gen.finish_reason = "length"

    def __deepcopy__(self, memo):  # generate copies its criteria; these hold live state
        return self

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        tokens = input_ids[:, -1].tolist()
        for i, job in enumerate(self.jobs):
            if self.finished[i]:
                continue
            gen = job.gen
            if gen.cancel.cancelled:
                self._end(i, "cancelled")
                continue
            if tokens[i] in self.stop_ids:
                self._end(i, "stop")
                continue
            gen.completion_ids.append(tokens[i])
            piece = self.matchers[i].feed(self.decoders[i].add(tokens[i]))
            self._send(i, piece)
            if self.matchers[i].stopped:
                self._end(i, "stop")
            elif gen.completion_tokens >= gen.max_new_tokens:
                self._end(i, "length")
        return torch.tensor(self.finished, device=input_ids.device)

    def _send(self, i: int, piece: str) -> None:
        if piece:
            job = self.jobs[i]
            job.gen.text += piece
            if job.stream:
                job.post("piece", piece)

    def _end(self, i: int, reason: str) -> None:
        matcher = self.matchers[i]
        if not matcher.stopped:  # as the core does: what was held back comes out at the end
            rest = matcher.feed(self.decoders[i].flush())
            rest += "" if matcher.stopped else matcher.flush()
            if matcher.stopped:
                reason = "stop"
            self._send(i, rest)
        self.jobs[i].gen.finish_reason = reason
        self.finished[i] = True
        self.jobs[i].post("end")

    def fail(self, error) -> None:
        for i, job in enumerate(self.jobs):
            if not self.finished[i]:
                self.finished[i] = True
                job.post("error", error)

    def finish(self, elapsed: float) -> None:
        for i, job in enumerate(self.jobs):
            job.gen.elapsed_s = elapsed
            if not self.finished[i]:
                self._end(i, "length")
