"""Fixes to moto's hot paths: work it repeats on every execution, state or event.

Profiled under load (many concurrent executions), most of the endpoint's CPU went to work
whose result never changes: parsing the same ASL definition, building the same JSONPath
parsers, creating a new boto3 client for every service call a state makes. Each fix below
is small, keeps moto's behaviour, and says what it changes in moto and why, so that it can
go upstream as is.
"""

from __future__ import annotations

import functools
import io
import json
import os
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

DEFINITION_CACHE_SIZE = 64
"""Parsed state machine definitions kept (a stack has a handful, each with its versions)."""
BOTO_CLIENT_ACCESS_KEY = "ak"
"""The access key of the clients moto's Step Functions make (``boto_client_for``)."""
JSONPATH_CACHE_SIZE = 4096
"""Parsed JSONPath expressions kept (a definition has tens; events and tests add a few)."""


def install() -> None:
    list_regions_once()  # first: importing moto's EC2 models (parse_jsonpath_once) lists them
    parse_jsonpath_once()
    parse_definitions_once()
    share_service_clients()
    invoke_lambda_tasks_in_process()
    count_queue_messages_on_one_clock_reading()
    send_to_queues_without_counting_their_messages()
    receive_from_queues_without_listing_their_attributes()
    list_response_methods_once()
    find_account_backends_without_locking()
    draw_random_strings_at_once()
    describe_missing_files_with_one_class()
    parse_templates_with_libyaml()


def list_regions_once() -> None:
    """List a service's regions in every partition once per process, not once per session.

    moto builds a new boto3 ``Session`` wherever it needs a region list (three times, one
    per partition, while its EC2 models are imported; once per service and account for the
    backends), and botocore's ``get_available_regions`` reads the endpoint data and the
    whole service model into each new session only to answer: for EC2, a model of
    megabytes, parsed three times at every start of the endpoint, most of a second of CPU.
    The answer depends only on botocore's data, so the first question about a service lists
    it in every partition, kept per data path (``AWS_DATA_PATH``, the one setting that could
    point a session at other files); each caller gets its own copy of a list. How a list is
    made is botocore's method as is.
    """
    from botocore.exceptions import UnknownServiceError
    from botocore.session import Session

    lock = threading.Lock()
    listed: dict[tuple[object, str, bool], dict[str, list[str]]] = {}

    def every_partition(
        session: Session, service_name: str, allow_non_regional: bool
    ) -> dict[str, list[str]]:
        resolver = session._get_internal_component("endpoint_resolver")
        try:
            metadata = session.get_service_data(service_name)["metadata"]
        except UnknownServiceError:
            return {}
        prefix = metadata.get("endpointPrefix", service_name)
        return {
            partition: resolver.get_available_endpoints(prefix, partition, allow_non_regional)
            for partition in resolver.get_available_partitions()
        }

    def get_available_regions(
        self: Session,
        service_name: str,
        partition_name: str = "aws",
        allow_non_regional: bool = False,
    ) -> list[str]:
        key = (self.get_config_variable("data_path"), service_name, allow_non_regional)
        with lock:
            if key not in listed:
                listed[key] = every_partition(self, service_name, allow_non_regional)
            return list(listed[key].get(partition_name, []))

    Session.get_available_regions = get_available_regions  # botocore patched


def parse_jsonpath_once() -> None:
    """Parse each JSONPath expression once.

    ``jsonpath_ng.parse`` and ``jsonpath_ng.ext.parse`` build a new LALR parser (PLY reads
    its whole table) on every call, which costs about a millisecond; moto calls them for
    every path of every state it evaluates (InputPath, ResultPath, every ``.$`` parameter)
    and for every input path of every EventBridge target. A parsed expression is immutable,
    so the same one serves every caller.
    """
    import jsonpath_ng.ext
    from jsonpath_ng.ext.parser import parse as parse_extended
    from jsonpath_ng.parser import parse as parse_plain
    from moto.stepfunctions.parser.asl.component.common.path import result_path
    from moto.stepfunctions.parser.asl.utils import json_path

    plain = functools.lru_cache(maxsize=JSONPATH_CACHE_SIZE)(parse_plain)
    extended = functools.lru_cache(maxsize=JSONPATH_CACHE_SIZE)(parse_extended)
    result_path.parse = plain  # type: ignore[attr-defined]  # moto patched
    json_path.parse = extended  # type: ignore[attr-defined]  # moto patched
    # moto.events.utils imports it from jsonpath_ng.ext inside the function, at each call.
    jsonpath_ng.ext.parse = extended  # type: ignore[attr-defined]  # moto patched


def parse_definitions_once() -> None:
    """Parse each state machine definition once, not at every execution.

    moto's ``ExecutionWorker`` runs the ANTLR parser and the preprocessor over the whole
    definition at the start of every execution (tens of milliseconds for a dozen states).
    The program it builds holds no execution state: everything an execution changes lives
    in its ``Environment``, which is why moto already evaluates one program from several
    threads at once (the iterations of a Map). So one parsed program serves every execution
    of the same definition text. The one thing a program computes lazily, each component's
    ``heap_key`` (a random name for its slot in an execution's heap), is computed right
    after parsing, so that threads sharing the program never race to assign it.
    """
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

    parse = parsed_once(AmazonStateLanguageParser.parse)
    AmazonStateLanguageParser.parse = staticmethod(parse)  # type: ignore[method-assign,assignment]  # moto patched


def parsed_once(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse`` (moto's ASL parser) remembering its result for each definition, with the
    heap keys of the program's components computed."""
    from moto.stepfunctions.parser.asl.component.component import Component
    from moto.stepfunctions.parser.asl.component.eval_component import EvalComponent

    @functools.lru_cache(maxsize=DEFINITION_CACHE_SIZE)
    def parse_once(definition: str) -> Any:
        program, tree = parse(definition)
        for component in _reachable(program, Component):
            if isinstance(component, EvalComponent):
                _ = component.heap_key
        return program, tree

    return parse_once


def _reachable(root: object, kind: type[Any]) -> Iterator[Any]:
    """Every ``kind`` object reachable from ``root`` through the attributes of ``kind``
    objects and through lists, tuples, sets and dicts."""
    seen: set[int] = set()
    pending: list[object] = [root]
    while pending:
        item = pending.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, list | tuple | set | frozenset):
            pending.extend(item)
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, kind):
            yield item
            pending.extend(vars(item).values())


def share_service_clients() -> None:
    """One boto3 client per service and region for the service integrations of states, and
    answered in process rather than over HTTP.

    moto's ``boto_client_for`` creates a new boto3 client for every Task state that calls a
    service (Lambda, the SDK integrations, SQS, DynamoDB, ...): loading the service model,
    copying the event hooks and resolving the endpoint take ~10 ms of CPU each time, more
    than the call itself. botocore clients are thread-safe and every argument moto passes is
    the same each time but the service and region, so one client per those serves every
    state.

    In server mode those clients then send each call as an HTTP request back into this same
    server: a connection, a thread, werkzeug, Flask, then the same response handler, about
    4 ms of this process's CPU per call. Each shared client instead hands its requests to
    moto's ``BotocoreStubber``, which is how moto answers boto3 in its decorator mode: the
    request is still built, signed and parsed by botocore and answered by the service's
    response handler, in about 0.8 ms.
    """
    import boto3
    from moto.core.botocore_stubber import BotocoreStubber
    from moto.stepfunctions.parser.asl.utils import boto_client

    in_process = BotocoreStubber()
    in_process.enabled = True
    lock = threading.Lock()
    clients: dict[tuple[str, str], Any] = {}

    def shared_client(*, service_name: str, region_name: str, **kwargs: Any) -> Any:
        kwargs.pop("endpoint_url", None)  # the AWS endpoint, which the stubber recognises
        with lock:
            client = clients.get((service_name, region_name))
            if client is None:
                client = boto3.client(service_name=service_name, region_name=region_name, **kwargs)
                client.meta.events.register("before-send", in_process)
                clients[(service_name, region_name)] = client
        return client

    boto_client.boto3 = _Boto3Clients(shared_client)  # type: ignore[attr-defined]  # moto patched


class _Boto3Clients:
    """Stands in for the ``boto3`` module where only ``boto3.client`` is used."""

    def __init__(self, client: Callable[..., Any]) -> None:
        self.client = client


def invoke_lambda_tasks_in_process() -> None:
    """A Lambda task's invocation goes to moto's Lambda backend directly, as the Invoke API's
    handler does, rather than through a boto3 client.

    For every Lambda task (a function ARN as ``Resource``, or ``lambda:invoke``), moto builds
    an Invoke request with a boto3 client, serialises the payload into it, signs it, finds the
    Lambda service among all of moto's URL patterns, makes a werkzeug request of it, parses it
    back and serialises the answer for botocore to parse again: about 2 ms of CPU around an
    invocation that itself costs a tenth of that. Step Functions calls Lambda inside AWS, not
    through a client, so here the task asks the backend for the same thing the handler would
    (same account, function, qualifier and payload) and gets back what the client returned:
    the status, the payload and ``FunctionError`` (no log: the task does not ask for it).
    An error the API would have
    answered (no such function, say) is raised as the ``ClientError`` the client raised.
    Invocations other than a plain synchronous one (``InvocationType``, ``ClientContext``,
    ...) still take the client.
    """
    from botocore.exceptions import ClientError
    from moto.awslambda.models import lambda_backends
    from moto.core.exceptions import ServiceException, _RESTError
    from moto.iam.models import get_account_id_from
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils

    through_client = lambda_eval_utils._invoke_lambda_function
    response_size_limit = 6000000  # moto's Invoke handler's check of the payload

    def invoke(parameters: dict[str, Any], region: str, state_credentials: Any) -> Any:
        if not set(parameters) <= {"FunctionName", "Payload", "Qualifier"}:
            return through_client(parameters, region, state_credentials)
        # The account moto's client reaches: its access key's, unless the server has one.
        account = os.environ.get("MOTO_ACCOUNT_ID") or get_account_id_from(BOTO_CLIENT_ACCESS_KEY)
        response_headers: dict[str, str] = {}
        try:
            payload = lambda_backends[account][region].invoke(
                parameters["FunctionName"],
                parameters.get("Qualifier"),
                parameters.get("Payload"),
                {},
                response_headers,
            )
        except (_RESTError, ServiceException) as error:
            code = getattr(error, "error_type", None) or str(error.code)
            answer = {"Error": {"Code": code, "Message": error.message}}
            raise ClientError(answer, "Invoke") from error
        body = payload.encode() if isinstance(payload, str) else payload or b""
        if sys.getsizeof(body) > response_size_limit:
            response_headers["x-amz-function-error"] = "Unhandled"
            body = json.dumps(
                {
                    "errorMessage": "Response payload size exceeded maximum allowed payload "
                    "size (6291556 bytes).",
                    "errorType": "Function.ResponseSizeTooLarge",
                }
            ).encode()
        response: dict[str, Any] = {
            "StatusCode": 200,
            "Payload": lambda_eval_utils._from_payload(io.BytesIO(body)),
        }
        if "x-amz-function-error" in response_headers:
            response["FunctionError"] = response_headers["x-amz-function-error"]
        return response

    lambda_eval_utils._invoke_lambda_function = invoke  # moto patched


def count_queue_messages_on_one_clock_reading() -> None:
    """SQS queues count their messages reading the clock once, not twice per message.

    moto's ``Queue.messages`` and its three ``approximate_number_of_messages*`` properties
    ask each message whether it is visible and whether it is delayed, and each of those
    answers reads the clock through ``utcnow()`` and datetime arithmetic (~3 us). Every
    ``SendMessage`` evaluates all of them (``send_message`` reads ``queue.attributes`` to
    look up one flag), so sending to a queue nobody drains, like an EventBridge target
    queue, costs more with every message in it: with a few thousand, most of the endpoint's
    CPU. Reading the clock once per count keeps each message's test to two comparisons,
    with the same result.
    """
    from moto.core.utils import unix_time_millis
    from moto.sqs.models import Message, Queue

    def visible_now(queue: Queue) -> list[Message]:
        now = unix_time_millis()
        return [m for m in queue._messages if now > m.visible_at and now >= m.delayed_until]

    def delayed_count(queue: Queue) -> int:
        now = unix_time_millis()
        return sum(1 for m in queue._messages if now < m.delayed_until)

    def not_visible_count(queue: Queue) -> int:
        now = unix_time_millis()
        return sum(1 for m in queue._messages if now <= m.visible_at)

    replacements: dict[str, Callable[[Queue], object]] = {
        "messages": visible_now,
        "approximate_number_of_messages": lambda queue: len(visible_now(queue)),
        "approximate_number_of_messages_delayed": delayed_count,
        "approximate_number_of_messages_not_visible": not_visible_count,
    }
    for name, count in replacements.items():
        setattr(Queue, name, property(count))


def dispatcher(create_app: Callable[[Any], Any]) -> Any:
    """moto's server application, remembering which backend serves which host name.

    For every request, moto's ``DomainDispatcherApplication`` lists moto's service modules
    on disk and tries the URL patterns of every service in turn (hundreds of regular
    expressions) to find the backend for the request's host, all under one lock that every
    request thread waits for. The answer for a host never changes, so it is looked up once.
    """
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    class HostCachingDispatcher(DomainDispatcherApplication):
        def __init__(self, create_app: Callable[[Any], Any]) -> None:
            super().__init__(create_app)
            self._backend_by_host: dict[str | None, Any] = {}

        def get_backend_for_host(self, host: str | None) -> Any:
            try:
                return self._backend_by_host[host]
            except KeyError:
                backend = super().get_backend_for_host(host)
                self._backend_by_host[host] = backend
                return backend

    return HostCachingDispatcher(create_app)


def list_response_methods_once() -> None:
    """List the methods of each response class once, not at every request.

    ``BaseResponse.call_action`` finds the method for the requested action by listing the
    methods of its response class with ``inspect.getmembers``, which walks and sorts the
    hundreds of attributes of the class on every request. A class's methods do not change
    while the server runs.
    """
    from moto.core import responses
    from moto.core.utils import method_names_from_class

    responses.method_names_from_class = functools.cache(method_names_from_class)  # type: ignore[attr-defined]  # moto patched


def find_account_backends_without_locking() -> None:
    """Look up an account's backend without taking moto's global lock once it exists.

    ``BackendDict.__getitem__`` runs ``_create_account_specific_backend`` on every lookup
    (``sqs_backends[account][region]``, several per request and per state): under the
    lock that every backend of every service shares, it copies the dict's keys into a list
    to test membership, then tests the dict against every registered ``BackendDict`` with
    ``__eq__``. Once the account's backend exists (it is created and registered together,
    under that lock, and ``reset`` removes both together) a plain dict lookup finds it.
    """
    from moto.core.base_backend import BackendDict

    create_and_get = BackendDict.__getitem__

    def get(self: BackendDict[Any], account_id: str) -> Any:
        try:
            return dict.__getitem__(self, account_id)
        except KeyError:
            return create_and_get(self, account_id)

    BackendDict.__getitem__ = get  # type: ignore[method-assign]  # moto patched


def send_to_queues_without_counting_their_messages() -> None:
    """SendMessage looks up the queue's one flag it needs without counting its messages.

    moto's send path (``send_message``, ``_validate_message``, ``add_message``) reads the
    queue's ContentBasedDeduplication flag as ``queue.attributes.get(...)``, and
    ``queue.attributes`` computes every attribute of the queue, among them its three
    message counts, each a pass over all its messages. So each message sent to a queue
    nobody drains (an EventBridge rule's target queue gets every status change) costs more
    than the one before. While a thread sends a message, ``queue.attributes`` is, for that
    thread only, just that flag, exactly as the full attributes would give it (a FIFO
    queue's ``"true"``/``"false"``, absent for a standard queue). The upstream fix is to
    read ``queue.content_based_deduplication`` in those three places.
    """
    from moto.sqs.models import Queue, SQSBackend

    sending = threading.local()
    all_attributes = vars(Queue)["attributes"].fget
    send = SQSBackend.send_message

    def attributes(queue: Queue) -> dict[str, Any]:
        if not getattr(sending, "active", False):
            return all_attributes(queue)  # type: ignore[no-any-return]  # moto is untyped
        if not queue.fifo_queue:
            return {}
        flag = bool(queue.content_based_deduplication)  # type: ignore[attr-defined]  # set by moto at run time
        return {"ContentBasedDeduplication": str(flag).lower()}

    def send_message(self: SQSBackend, *args: Any, **kwargs: Any) -> Any:
        outer = getattr(sending, "active", False)
        sending.active = True
        try:
            return send(self, *args, **kwargs)
        finally:
            sending.active = outer

    Queue.attributes = property(attributes)  # type: ignore[assignment,method-assign]  # moto patched
    SQSBackend.send_message = send_message  # type: ignore[method-assign]  # moto patched


def receive_from_queues_without_listing_their_attributes() -> None:
    """ReceiveMessage reads a queue's retention period without computing all its attributes.

    For every message it receives, moto's ``receive_message`` checks the message against the
    queue's retention period through ``get_queue_attributes(["MessageRetentionPeriod"])``,
    which computes ``queue.attributes`` three times over, each time converting every
    attribute name and counting the queue's messages. The period is the queue's
    ``message_retention_period``, which is what that attribute holds; the test is moto's.
    """
    from moto.core.utils import unix_time
    from moto.sqs.models import Message, SQSBackend

    def is_message_valid_based_on_retention_period(
        self: SQSBackend, queue_name: str, message: Message
    ) -> bool:
        retention_period = self.get_queue(queue_name).message_retention_period  # type: ignore[attr-defined]  # set by moto at run time
        retain_until = retention_period + message.sent_timestamp / 1000  # type: ignore[operator]  # set when sent
        return bool(retain_until > unix_time())

    SQSBackend.is_message_valid_based_on_retention_period = (  # type: ignore[method-assign]  # moto patched
        is_message_valid_based_on_retention_period
    )


def describe_missing_files_with_one_class() -> None:
    """Flask's debug mode gives each request's ``files`` one subclass, made once, not a new
    class per request.

    moto runs its Flask applications in debug mode, where every request that reads its body
    has ``request.files`` turned into an instance of a class made for that request (to
    explain a missing file better). Making a class of a generic mapping type costs more
    than most of the request's own work. The class made here once per original class does
    the same: the request it explains is kept on the ``files`` object rather than in a
    closure.
    """
    from flask import debughelpers
    from flask.debughelpers import DebugFilesKeyError

    lock = threading.Lock()
    subclasses: dict[type, type] = {}

    def explaining(files_class: type) -> type:
        class Files(files_class):  # type: ignore[misc]
            def __getitem__(self, key: str) -> Any:
                try:
                    return super().__getitem__(key)
                except KeyError as e:
                    request = self.__dict__["_enctype_request"]
                    if key not in request.form:
                        raise
                    raise DebugFilesKeyError(request, key).with_traceback(e.__traceback__) from None

        Files.__name__ = files_class.__name__
        Files.__module__ = files_class.__module__
        return Files

    def attach_enctype_error_multidict(request: Any) -> None:
        files = request.files
        original = files.__class__
        with lock:
            if original not in subclasses:
                subclasses[original] = explaining(original)
        files.__dict__["_enctype_request"] = request
        files.__class__ = subclasses[original]

    debughelpers.attach_enctype_error_multidict = attach_enctype_error_multidict  # flask patched


def parse_templates_with_libyaml() -> None:
    """A stack's template is read by PyYAML's C parser (libyaml), where it has it.

    moto reads every template it is given with PyYAML's pure-Python loader, JSON ones too
    (JSON is YAML): a deployment's packaged template, 130 kB of JSON, takes a quarter of a
    second of CPU there, at every start of the local stack, and 15 ms with libyaml. The C
    loader builds the document with the same constructors and resolver, moto's tags
    (``!Ref``, ``!Sub``, ...) included. A template the C parser does not take is read by
    moto's own code as before, so that its errors and its JSON fallback stay moto's; so is
    one with a tab, the one character the two parsers are known to treat differently (libyaml
    takes it as a separator in flow collections, PyYAML's parser refuses it).
    """
    import yaml
    from moto.cloudformation.models import Stack
    from moto.cloudformation.utils import yaml_tag_constructor

    if not yaml.__with_libyaml__:
        return

    class TemplateLoader(yaml.CLoader):
        """moto's loader (``yaml.Loader`` given its tags), in C."""

    TemplateLoader.add_multi_constructor("", yaml_tag_constructor)
    parse = Stack.parse_template

    def parse_template(template: str) -> dict[str, Any]:
        if "\t" in template:  # libyaml takes tabs where PyYAML's parser refuses them
            return parse(template)
        try:
            parsed: dict[str, Any] = yaml.load(template, Loader=TemplateLoader)  # nosec B506  # moto's own loader, in C
        except Exception:
            return parse(template)
        return parsed

    Stack.parse_template = staticmethod(parse_template)  # type: ignore[method-assign]  # moto patched


def draw_random_strings_at_once() -> None:
    """Random strings and hex ids drawn with one ``choices`` call, not one ``choice`` per
    character.

    Every response carries a request id of 52 random characters (``x-amzn-requestid``), and
    moto makes it with a Python-level loop calling ``random.choice`` 52 times: more CPU than
    some whole responses. ``choices`` draws from the same generator (so a seeded one stays
    reproducible) with the same distribution over the same alphabet.
    """
    import string

    from moto.moto_api._internal.moto_random import HEX_CHARS, MotoRandom

    def get_random_hex(self: MotoRandom, length: int = 8) -> str:
        return "".join(map(str, self.choices(HEX_CHARS, k=length)))

    def get_random_string(
        self: MotoRandom, length: int = 20, include_digits: bool = True, lower_case: bool = False
    ) -> str:
        pool = string.ascii_letters + (string.digits if include_digits else "")
        drawn = "".join(self.choices(pool, k=length))
        return drawn.lower() if lower_case else drawn

    MotoRandom.get_random_hex = get_random_hex  # type: ignore[method-assign]  # moto patched
    MotoRandom.get_random_string = get_random_string  # type: ignore[method-assign]  # moto patched
