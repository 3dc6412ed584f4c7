"""Tool-use conversations for the bundled model, written in the engine's own prompt format.

The engine shows a model its tools as text (``explainer.lifecycle.tool_format``): the tool
definitions at the end of the system prompt, a call as an assistant turn ``tool_use NAME`` +
newline + the JSON input, a result as a user turn ``tool_result: ...``. This module writes
conversations in exactly that format, of four kinds:

- ``call``: a question that names an identifier (``A-10293``, ``88412``, ``jsmith42``,
  ``payments-api``, ``Osaka``; quoted or not, at the start, middle or end) and a tool that
  answers it; the answer is the call, whose argument copies the identifier;
- ``text``: tools are offered but the question does not need them (a documentation
  question from the text corpus, thanks, a question about what a tool does) or they cannot
  answer it (its tool is not offered): the answer is text;
- ``result``: the second request: the question, the call, and the ``tool_result`` (a
  success, or a failure with ``is_error``), answered by one sentence that states the
  result's key fact (``key`` in the record: what the evaluation looks for in the answer).

Tools come from everyday operations (orders, users, services, cities, files, tickets, DAGs,
...; :data:`FAMILIES`) and from the documented Python APIs the text corpus reads (a
``lookup`` tool whose result is the documentation's answer).

Two splits: ``train`` and ``heldout``. Held-out families have their own tool names,
argument names and identifier word lists, and every held-out identifier is removed from the
training conversations, so the held-out evaluation (``evaluate --tools``) measures tools,
arguments and identifiers the model has never seen (:func:`vocabulary` lists them; the tests
check they are disjoint).

Everything is drawn from ``random.Random`` seeded by a string: the same arguments give the
same conversations, byte for byte. Conversations whose text holds a blocked word
(``explainer/llm/blocklist.txt``) are dropped.

How a call turn becomes tokens (:func:`encode_conversation`) follows the engine too: with
``tool_choice`` ``tool`` the engine forces ``tool_use NAME\\n`` as one string, with ``any``
(and a call chosen under ``auto``) it forces ``tool_use `` and the name is decoded after it;
the two cut the text into different tokens, so a call conversation records which one it
teaches (``style``).
"""
from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from explainer.lifecycle.tool_format import TOOL_USE_PREFIX, tool_call_text, tool_result_text, tools_system_prompt
from explainer.llm.blocklist import find_blocked

BASE_SYSTEMS = [None, None, None, "You are a helpful assistant.", "You are an operations assistant for a small team.",
                "Answer briefly.", "You help engineers with their systems."]


def _compact(value) -> str:
    """A tool input as the history writes it (``payload._turn_text``)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _result_json(value) -> str:
    """A tool result as a client sends it (``demo_tools.run_tool``)."""
    return json.dumps(value, ensure_ascii=False)


# ---- identifiers ------------------------------------------------------------------------------

WORDS = {
    "train": {
        "surname": "smith garcia chen novak okafor müller rossi tanaka silva kowalski nguyen larsen dubois "
                   "moreau ivanova haddad costa berg fischer lopez walsh patel kim schmidt".split(),
        "city": "Osaka Lyon Porto Denver Nairobi Hanoi Valencia Leeds Austin Bergen Quito Perth Turin Seville "
                "Busan Dublin Zagreb Tucson Bilbao Cork Lagos Krakow Montreal Santiago Hamburg Nagoya".split(),
        "word": "payments orders billing search checkout auth inventory catalog gateway ledger email profile "
                "metrics reports cart pricing shipping notify media export import sync audit session".split(),
        "suffix": "api service worker db cache queue web backend proxy job".split(),
        "thing": "etl nightly sales daily user clean raw hourly weekly marketing finance events".split(),
        "thing2": "pipeline load sync rollup refresh backup ingest report export digest".split(),
        "prefix": "ABCDEFGHJK",
        "project": "OPS INFRA WEB DATA SEC APP CORE".split(),
        "dir": "reports data logs exports backups config docs".split(),
        "ext": "csv json txt log yaml pdf".split(),
        "org": "acme globex initech umbrella hooli vandelay".split(),
    },
    "heldout": {
        "surname": "ferreira oyelaran lindqvist marchetti bianchi yamamoto abara delacroix horvath".split(),
        "city": "Kyoto Oaxaca Tromso Adelaide Windhoek Trieste Ghent Halifax Utrecht Cusco Aarhus Salta".split(),
        "word": "fleet harbor ticketing loyalty warehouse printing telemetry routing".split(),
        "suffix": "daemon svc agent store".split(),
        "thing": "quarterly archive vendor payroll".split(),
        "thing2": "merge compaction snapshot".split(),
        "prefix": "RSTUVWXYZ",
        "project": "LAB FIN HR".split(),
        "dir": "archive inbox shared".split(),
        "ext": "xml tsv md".split(),
        "org": "northwind contoso tailspin".split(),
    },
}


def _digits(r: random.Random, n: int) -> str:
    return str(r.randint(10 ** (n - 1), 10 ** n - 1))


IDENTS: dict[str, Callable[[random.Random, dict], object]] = {
    "code": lambda r, w: f"{r.choice(w['prefix'])}-{_digits(r, 5)}",
    "number": lambda r, w: r.randint(1000, 99999),
    "username": lambda r, w: f"{r.choice('abcdefghjklmnprstw')}{r.choice(w['surname'])}{r.randint(1, 99)}",
    "slug": lambda r, w: f"{r.choice(w['word'])}-{r.choice(w['suffix'])}",
    "city": lambda r, w: r.choice(w["city"]),
    "path": lambda r, w: f"{r.choice(w['dir'])}/{r.choice(w['word'])}_{r.randint(1, 12)}.{r.choice(w['ext'])}",
    "ticket": lambda r, w: f"{r.choice(w['project'])}-{r.randint(100, 9999)}",
    "snake": lambda r, w: f"{r.choice(w['thing'])}_{r.choice(w['thing2'])}",
    "repo": lambda r, w: f"{r.choice(w['org'])}/{r.choice(w['word'])}",
    "host": lambda r, w: f"{r.choice(w['word'])}-{r.randint(1, 30):02d}.internal",
    "short": lambda r, w: "".join(r.choice(w["prefix"] + "2345679") for _ in range(5)),
    "flight": lambda r, w: f"{r.choice(w['prefix'])}{r.choice('ABCDEFGHJKLMNPQRSTUVWXYZ')}{r.randint(100, 9999)}",
    "email": lambda r, w: f"{r.choice('abcdefghjklmnprstw')}.{r.choice(w['surname'])}@{r.choice(w['org'])}.com",
}

# ---- facts a result can carry ------------------------------------------------------------------

_WHEN = ["6 hours ago", "2 hours ago", "20 minutes ago", "yesterday at 14:05", "this morning at 02:00",
         "3 days ago", "45 minutes ago", "last night at 23:30", "1 hour ago", "today at 09:12"]
_DATES = ["March 3", "June 18", "September 9", "November 27", "January 14", "April 30", "July 7", "October 2"]
VALUES: dict[str, Callable[[random.Random], str]] = {
    "order_status": lambda r: r.choice(["shipped", "delivered", "pending", "cancelled", "refunded", "packed"]),
    "date": lambda r: r.choice(_DATES),
    "when": lambda r: r.choice(_WHEN),
    "health": lambda r: r.choice(["healthy", "degraded", "down", "healthy", "recovering"]),
    "percent": lambda r: f"{r.randint(1, 99)}%",
    "count": lambda r: str(r.randint(2, 9000)),
    "temp": lambda r: f"{r.randint(-5, 36)}°C",
    "sky": lambda r: r.choice(["sunny", "cloudy", "raining", "snowing", "foggy", "windy"]),
    "size": lambda r: r.choice([f"{r.randint(2, 900)} KB", f"{r.randint(1, 80)}.{r.randint(1, 9)} MB"]),
    "ticket_status": lambda r: r.choice(["open", "closed", "in progress", "waiting for review", "resolved"]),
    "person": lambda r: r.choice(["Maria", "Tom", "Aiko", "Samir", "Lena", "Diego", "Priya", "Jonas", "Grace"]),
    "money": lambda r: f"${r.randint(5, 9999)}.{r.randint(0, 99):02d}",
    "paid": lambda r: r.choice(["paid", "unpaid", "overdue", "paid"]),
    "flight_status": lambda r: r.choice(["on time", "delayed by 40 minutes", "boarding", "cancelled", "landed"]),
    "gate": lambda r: f"{r.choice('ABCDE')}{r.randint(1, 40)}",
    "place": lambda r: r.choice(["Chicago", "Rotterdam", "Memphis", "Leipzig", "the local depot", "Singapore"]),
    "team": lambda r: r.choice(["Finance", "Support", "Platform", "Sales", "Research", "Design"]),
    "build": lambda r: r.choice(["passed", "failed", "running", "passed"]),
    "run_state": lambda r: r.choice(["success", "failed", "running", "success"]),
    "clock": lambda r: f"{r.randint(0, 23):02d}:{r.choice(['00', '05', '15', '30', '42', '55'])}",
    "plan": lambda r: r.choice(["free", "pro", "team", "enterprise"]),
    "bool_word": lambda r: r.choice(["yes", "no"]),
    "version": lambda r: f"{r.randint(1, 9)}.{r.randint(0, 20)}.{r.randint(0, 9)}",
    "ip": lambda r: f"10.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}",
    "seats": lambda r: str(r.randint(0, 40)),
}


@dataclass(frozen=True)
class Fact:
    """One field of a result: its JSON key, how its value is drawn, the sentence that states it,
    and questions that ask for it (``{id}`` and ``{noun}`` are filled in)."""

    key: str
    value: str
    sentence: str
    questions: tuple[str, ...] = ()


@dataclass(frozen=True)
class Extra:
    """An optional second argument: an enum, an integer or a boolean, and how a question asks for it."""

    name: str
    schema: dict
    phrase: str  # "{v}" is the value (an enum's word or a number); a boolean's phrase asks for True
    description: str = ""
    values: tuple[int, int] = (1, 20)  # an integer's range (constrained decoding has no minimum/maximum)


@dataclass(frozen=True)
class Family:
    split: str
    noun: str
    tools: tuple[str, ...]  # tool names (one is drawn per conversation)
    descriptions: tuple[str, ...]
    arg: str
    arg_description: str
    ident: str  # a key of IDENTS
    facts: tuple[Fact, ...]
    questions: tuple[str, ...] = ()
    extras: tuple[Extra, ...] = ()
    integer: bool = False

    def schema(self, extras: tuple[Extra, ...]) -> dict:
        props = {self.arg: {"type": "integer" if self.integer else "string", "description": self.arg_description}}
        for e in extras:
            props[e.name] = dict(e.schema, **({"description": e.description} if e.description else {}))
        return {"type": "object", "properties": props, "required": [self.arg]}


_UNITS = Extra("units", {"type": "string", "enum": ["celsius", "fahrenheit"]}, "in {v}")
_LIMIT = Extra("limit", {"type": "integer"}, "only the last {v}", "How many to return (1 to 50).", (1, 50))
_VERBOSE = Extra("include_history", {"type": "boolean"}, "with its history", "Also return past changes.")
_DETAIL = Extra("detailed", {"type": "boolean"}, "with all the details")
_REGION = Extra("region", {"type": "string", "enum": ["eu", "us", "asia"]}, "in the {v} region")
_LANG = Extra("language", {"type": "string", "enum": ["english", "french", "german", "spanish"]}, "in {v}")
_FMT = Extra("format", {"type": "string", "enum": ["short", "full"]}, "in the {v} format")
# held-out extras: names that never occur in training
_SCALE = Extra("scale", {"type": "string", "enum": ["metric", "imperial"]}, "using {v} units")
_MAXN = Extra("max_items", {"type": "integer"}, "at most {v} of them", "1 to 20.")
_ARCH = Extra("with_archived", {"type": "boolean"}, "including archived ones")

F = Fact
FAMILIES: tuple[Family, ...] = (
    # ---- train -------------------------------------------------------------------------------
    Family("train", "order", ("get_order_status", "lookup_order", "check_order"),
           ("Look up an order by its id: status and delivery date.", "Get the current status of a customer order."),
           "order_id", "The order's id, like A-10293.", "code",
           (F("status", "order_status", "Order {id} is {v}.", ("Has order {id} shipped yet?", "Where is my order {id}?")),
            F("delivery_date", "date", "Order {id} should arrive on {v}.", ("When will order {id} arrive?",))),
           extras=(_VERBOSE,)),
    Family("train", "user", ("get_user", "find_user_profile", "lookup_account"),
           ("Fetch a user's profile by username.", "Find one user account: email, plan and last login."),
           "username", "The login name.", "username",
           (F("plan", "plan", "{id} is on the {v} plan.", ("Which plan is {id} on?",)),
            F("last_login", "when", "{id} last logged in {v}.", ("When did {id} last log in?", "Is {id} still active?")))),
    Family("train", "service", ("get_service_health", "check_service", "service_status"),
           ("Health of a deployed service: status, error rate and replicas.", "Check whether a service is up."),
           "service", "The service's name.", "slug",
           (F("status", "health", "{id} is {v}.", ("Is {id} up?", "Is {id} down right now?", "How is {id} doing?")),
            F("error_rate", "percent", "{id} has an error rate of {v}.", ("What's the error rate of {id}?",))),
           extras=(_REGION,)),
    Family("train", "city", ("get_weather", "current_weather", "weather_now"),
           ("Current weather for a city.", "The weather right now in one city: temperature and sky."),
           "city", "The city's name.", "city",
           (F("temperature", "temp", "It is {v} in {id}.", ("How warm is it in {id}?", "What's the temperature in {id}?")),
            F("conditions", "sky", "It is {v} in {id} right now.", ("Is it raining in {id}?", "What's the weather like in {id}?"))),
           extras=(_UNITS,)),
    Family("train", "file", ("stat_file", "get_file_info", "file_metadata"),
           ("Size and modification time of a file in the shared drive.", "Metadata of one file, by path."),
           "path", "Path of the file.", "path",
           (F("size", "size", "{id} is {v}.", ("How big is {id}?", "What size is the file {id}?")),
            F("modified", "when", "{id} was last changed {v}.", ("When was {id} last modified?",)))),
    Family("train", "ticket", ("get_ticket", "lookup_ticket", "ticket_details"),
           ("Read a support ticket: status and assignee.", "Details of one issue-tracker ticket."),
           "ticket_id", "The ticket's key.", "ticket",
           (F("status", "ticket_status", "{id} is {v}.", ("Is {id} closed?", "What's the status of {id}?")),
            F("assignee", "person", "{id} is assigned to {v}.", ("Who is working on {id}?", "Who owns {id}?"))),
           extras=(_VERBOSE,)),
    Family("train", "DAG", ("get_dag_status", "dag_run_status", "check_dag"),
           ("Look up one Airflow DAG: the state and time of its last run.", "Status of an Airflow DAG's latest run."),
           "dag_id", "The DAG's id.", "snake",
           (F("last_run", "when", "{id} last ran {v}.", ("Did my {id} DAG run today?", "When did {id} last run?",
                                                         "Did {id} run today?")),
            F("last_run_state", "run_state", "The last run of {id} ended in {v}.", ("Did {id} succeed?", "Did the {id} DAG fail?")))),
    Family("train", "invoice", ("get_invoice", "invoice_lookup"),
           ("Fetch an invoice by number: amount and payment state.", "Look up one invoice."),
           "invoice_number", "The invoice number.", "number",
           (F("amount", "money", "Invoice {id} is for {v}.", ("How much is invoice {id}?",)),
            F("state", "paid", "Invoice {id} is {v}.", ("Has invoice {id} been paid?", "Is invoice {id} paid?"))),
           integer=True),
    Family("train", "flight", ("get_flight_status", "flight_info"),
           ("Live status of a flight by its number.", "Departure status and gate of a flight."),
           "flight_number", "The flight number.", "flight",
           (F("status", "flight_status", "Flight {id} is {v}.", ("Is flight {id} on time?", "Is {id} delayed?")),
            F("gate", "gate", "Flight {id} leaves from gate {v}.", ("Which gate is {id} at?",)))),
    Family("train", "package", ("track_package", "get_tracking"),
           ("Where a parcel is now, by tracking code.", "Track a parcel."),
           "tracking_code", "The parcel's tracking code.", "short",
           (F("location", "place", "Package {id} is in {v}.", ("Where is package {id}?", "Where's my parcel {id} now?")),
            F("eta", "date", "Package {id} should be delivered on {v}.", ("When will {id} be delivered?",)))),
    Family("train", "repository", ("get_repo_stats", "repo_info"),
           ("Statistics of a code repository: stars and open issues.", "Look up a Git repository."),
           "repo", "owner/name of the repository.", "repo",
           (F("open_issues", "count", "{id} has {v} open issues.", ("How many open issues does {id} have?",)),
            F("stars", "count", "{id} has {v} stars.", ("How many stars does {id} have?",)))),
    Family("train", "employee", ("lookup_employee", "get_employee"),
           ("Directory entry of an employee by staff number.", "Find an employee by id."),
           "employee_id", "The staff number.", "number",
           (F("department", "team", "Employee {id} works in {v}.", ("Which team is employee {id} in?",)),
            F("manager", "person", "Employee {id} reports to {v}.", ("Who is the manager of employee {id}?",))),
           integer=True),
    Family("train", "host", ("get_host_metrics", "host_stats"),
           ("CPU and memory use of a server.", "Current load of one host."),
           "hostname", "The host's name.", "host",
           (F("cpu", "percent", "{id} is at {v} CPU.", ("How busy is {id}?", "What's the CPU use on {id}?")),
            F("memory", "percent", "{id} is using {v} of its memory.", ("How much memory is {id} using?",)))),
    Family("train", "build", ("get_build_status", "ci_build"),
           ("Result of a CI build by number.", "Status of a continuous-integration build."),
           "build_id", "The build number.", "number",
           (F("result", "build", "Build {id} {v}.", ("Did build {id} pass?", "What happened to build {id}?")),
            F("finished", "when", "Build {id} finished {v}.", ("When did build {id} finish?",))),
           extras=(_LIMIT,), integer=True),
    Family("train", "account", ("get_account_balance", "account_summary"),
           ("Balance of a customer account.", "Summary of one billing account."),
           "account_id", "The account's id.", "code",
           (F("balance", "money", "Account {id} has a balance of {v}.", ("What's the balance on {id}?",
                                                                          "How much is left in account {id}?")),)),
    Family("train", "email address", ("check_email", "verify_email"),
           ("Check whether an email address can receive mail.", "Verify an email address."),
           "email", "The address to check.", "email",
           (F("deliverable", "bool_word", "Deliverable for {id}: {v}.", ("Can {id} receive mail?", "Is {id} a valid address?")),)),
    Family("train", "package version", ("latest_version", "get_release"),
           ("Latest released version of an internal package.", "Newest release of a package."),
           "package", "The package name.", "slug",
           (F("version", "version", "The latest {id} release is {v}.", ("What's the latest version of {id}?",)),),
           extras=(_FMT,)),
    Family("train", "domain", ("resolve_domain", "dns_lookup"),
           ("Resolve an internal host name to its address.", "DNS lookup of a name."),
           "name", "The name to resolve.", "host",
           (F("address", "ip", "{id} resolves to {v}.", ("What IP does {id} have?", "What address is {id} on?")),)),
    Family("train", "queue", ("get_queue_depth", "queue_stats"),
           ("Number of messages waiting in a queue.", "Depth of a message queue."),
           "queue", "The queue's name.", "slug",
           (F("depth", "count", "{id} has {v} messages waiting.", ("How many messages are in {id}?", "Is {id} backed up?")),)),
    Family("train", "city time", ("get_local_time", "time_in_city"),
           ("The local time in a city.", "What time it is in a city now."),
           "location", "The city.", "city",
           (F("time", "clock", "It is {v} in {id}.", ("What time is it in {id}?", "What's the time in {id} right now?")),),
           extras=(_LANG,)),
    # ---- held out: tool names, argument names and identifiers never seen in training ------
    Family("heldout", "shipment", ("get_shipment_eta", "shipment_tracker"),
           ("When a freight shipment arrives, by reference.", "Track a freight shipment."),
           "shipment_ref", "The shipment reference.", "code",
           (F("arrival", "date", "Shipment {id} arrives on {v}.", ("When does shipment {id} arrive?",)),
            F("port", "place", "Shipment {id} is at {v}.", ("Where is shipment {id} now?",)))),
    Family("heldout", "member", ("get_member_points", "loyalty_balance"),
           ("Loyalty points of a club member.", "Points balance of a member."),
           "member_number", "The membership number.", "number",
           (F("points", "count", "Member {id} has {v} points.", ("How many points does member {id} have?",)),),
           integer=True),
    Family("heldout", "printer", ("get_printer_state", "printer_queue"),
           ("State of an office printer: status and jobs waiting.", "Check a network printer."),
           "printer_name", "The printer's name.", "slug",
           (F("status", "health", "{id} is {v}.", ("Is the {id} printer working?", "Is {id} online?")),
            F("jobs", "count", "{id} has {v} jobs waiting.", ("How many jobs are queued on {id}?",))),
           extras=(_ARCH,)),
    Family("heldout", "station", ("get_departures", "station_board"),
           ("Next train departures from a station.", "Departure board of a railway station."),
           "station", "The station's city.", "city",
           (F("next_departure", "clock", "The next train from {id} leaves at {v}.",
              ("When is the next train from {id}?", "What's the next departure from {id}?")),),
           extras=(_SCALE,)),
    Family("heldout", "branch", ("get_branch_checks", "branch_ci_state"),
           ("Status of the checks on a Git branch.", "CI checks of one branch."),
           "branch", "The branch name.", "snake",
           (F("checks", "build", "The checks on {id} {v}.", ("Did the checks on {id} pass?", "Is {id} green?")),),
           extras=(_MAXN,)),
    Family("heldout", "reservation", ("get_reservation", "booking_lookup"),
           ("A restaurant reservation by booking code.", "Find a table booking."),
           "booking_code", "The booking code.", "short",
           (F("party_size", "seats", "Booking {id} is for {v} people.", ("How many people is booking {id} for?",)),
            F("time", "clock", "Booking {id} is at {v}.", ("What time is reservation {id}?",)))),
    Family("heldout", "bucket", ("get_bucket_usage", "storage_usage"),
           ("How much a storage bucket holds.", "Usage of an object-storage bucket."),
           "bucket", "The bucket's name.", "repo",
           (F("used", "size", "{id} holds {v}.", ("How much is stored in {id}?", "How full is bucket {id}?")),)),
    Family("heldout", "contractor", ("find_contractor", "vendor_contact"),
           ("Contact of an external contractor by handle.", "Look up a contractor."),
           "handle", "The contractor's handle.", "username",
           (F("company", "team", "{id} works for {v}.", ("Which company is {id} with?",)),
            F("seen", "when", "{id} was last seen {v}.", ("When was {id} last around?",)))),
)

# Questions that fit any family: {noun} and {id} (already quoted or not) are filled in.
GENERIC_QUESTIONS = (
    "What's the status of {noun} {id}?", "Can you check {id} for me?", "{id}: any news?", "Look up {noun} {id}, please.",
    "I need the details of {noun} {id}.", "Check {id}.", "Hi! Could you look at {noun} {id}?",
    "What do you know about {id}?", "Please find {noun} {id}.", "Tell me about {noun} {id}.",
    "Quick one: {id}?", "My manager asked about {noun} {id}. What does it say?", "{id} - can you look it up?",
    "I'm asking about the {noun} {id}.", "Any update on {id}?",
)
QUOTES = ("{}", "{}", "{}", "'{}'", '"{}"', "`{}`")

THANKS = [("Thanks!", "You're welcome."), ("Thank you, that's all.", "Glad to help."),
          ("Hello!", "Hello! What can I look up for you?"), ("Great, thanks for checking.", "You're welcome.")]


def _fill(template: str, fam: Family, shown: str) -> str:
    q = template.replace("{noun}", fam.noun)
    q = q[0].upper() + q[1:] if q[0].islower() else q
    return q.replace("{id}", shown)


def tool_definition(fam: Family, r: random.Random) -> tuple[dict, tuple[Extra, ...]]:
    extras = fam.extras if fam.extras and r.random() < 0.6 else ()
    return {"name": r.choice(fam.tools), "description": r.choice(fam.descriptions), "input_schema": fam.schema(extras)}, extras


def _same(fams: list[Family], split: str) -> list[Family]:
    return [f for f in fams if f.split == split]


@dataclass
class Draw:
    """One drawn situation: the tools offered, the target family and tool, the question and the call."""

    system: str | None
    tools: list[dict]
    fam: Family
    tool: dict
    ident: object
    question: str
    call_input: dict
    fact: Fact


def _draw(r: random.Random, fams: list[Family], words: dict, lookups: list[tuple[str, str]],
          avoid: set[str]) -> Draw:
    fam = r.choice(fams)
    tool, extras = tool_definition(fam, r)
    others = [f for f in fams if f.noun != fam.noun]
    tools = [tool] + [tool_definition(f, r)[0] for f in r.sample(others, r.randint(0, min(3, len(others))))]
    r.shuffle(tools)
    while True:
        ident = IDENTS[fam.ident](r, words)
        if str(ident) not in avoid:
            break
    fact = r.choice(fam.facts)
    shown = str(ident) if fam.integer else r.choice(QUOTES).format(ident)
    if r.random() < 0.6:
        question = _fill(r.choice(fact.questions), fam, shown)
    else:  # a question that asks for nothing in particular: the answer states the first fact
        question, fact = _fill(r.choice(GENERIC_QUESTIONS + fam.questions), fam, shown), fam.facts[0]
    call_input = {fam.arg: ident}
    for e in extras:
        if r.random() < 0.5:
            continue
        if e.schema["type"] == "boolean":
            v, said = True, e.phrase
        elif e.schema["type"] == "integer":
            v = r.randint(*e.values)
            said = e.phrase.format(v=v)
        else:
            v = r.choice(e.schema["enum"])
            said = e.phrase.format(v=v)
        call_input[e.name] = v
        question = question.rstrip("?.!") + f", {said}" + ("?" if question.endswith("?") else ".")
    return Draw(r.choice(BASE_SYSTEMS), tools, fam, tool, ident, question, call_input, fact)


def _error(r: random.Random, d: Draw) -> tuple[str, str, str]:
    """(content, answer, key) of a failed call."""
    ident = d.ident
    kind = r.randrange(4)
    if kind == 0:
        return (f"{d.fam.noun} {ident} not found", f"I couldn't find {d.fam.noun} {ident}: the lookup says it was not found.", "not found")
    if kind == 1:
        return ("permission denied", f"I couldn't look up {ident}: permission denied.", "permission denied")
    if kind == 2:
        return ("the request timed out", f"The lookup of {ident} failed: the request timed out. Try again in a moment.", "timed out")
    return ("service unavailable (503)", f"I couldn't check {ident} right now: the service is unavailable.", "unavailable")


def _success(r: random.Random, d: Draw) -> tuple[str, str, str]:
    """(content, answer, key) of a call that worked: a JSON object whose asked-for field is the key fact."""
    values = {f.key: VALUES[f.value](r) for f in d.fam.facts}
    body = {d.fam.arg: d.ident, **values}
    if d.fam.noun == "DAG":  # shaped like the demo's table (demo_data/dags.json)
        body = {d.fam.arg: d.ident, "paused": False, "last_run_state": values["last_run_state"], "last_run": values["last_run"],
                "next_run": r.choice(["in 6 hours", "tomorrow at 02:00", "in 30 minutes"])}
    v = values[d.fact.key]
    answer = d.fact.sentence.format(id=d.ident, v=v)
    if d.fam.noun == "DAG" and d.fact.key == "last_run":
        state = values["last_run_state"]
        answer = {"success": f"Yes, {d.ident} ran successfully {v}.", "failed": f"{d.ident} ran {v}, but the run failed.",
                  "running": f"{d.ident} started {v} and is still running."}[state]
    if not answer.startswith(str(d.ident)):  # an identifier is copied as it is, never capitalised
        answer = answer[0].upper() + answer[1:]
    return _result_json(body), answer, v


def _lookup_tool(split: str) -> dict:
    name, arg = ("lookup_python_docs", "symbol") if split == "train" else ("read_reference", "qualified_name")
    return {"name": name, "description": "The documentation of a Python function, class or module.",
            "input_schema": {"type": "object", "properties": {arg: {"type": "string", "description": "A dotted name."}},
                             "required": [arg]}}


_DOTTED = re.compile(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)")


def _first_sentence(text: str) -> str:
    cut = text.find(". ")
    return text if cut < 0 else text[: cut + 1]


KINDS = {"train": ["call", "text", "result", "echo"], "heldout": ["call", "text", "result"]}
KIND_WEIGHTS = {"train": [5, 2, 3, 4], "heldout": [4, 3, 3]}  # call, text, result (, echo: training only)
ECHO_ASKS = ["Which {noun} is that about? Answer with its id only.", "Just repeat the {noun} I mentioned.",
             "First, which {noun} do I mean? The id alone, please.", "Say back the {noun} id, nothing else."]
_VOWELS, _CONSONANTS = "aeiou", "bcdfghjklmnprstvwz"


def _pseudo_word(r: random.Random) -> str:
    return "".join(r.choice(_CONSONANTS) + r.choice(_VOWELS) for _ in range(r.randint(2, 4)))


def training_words(doc_qa: list[dict], seed: str = "tools-v1", n_pseudo: int = 3000) -> dict:
    """The word lists training identifiers are built from: thousands of words, so that a model can
    only write an identifier by copying it from the question (a short list it would learn by heart).

    The words of the documentation answers and made-up pronounceable words, without any word of the
    held-out lists; the digits and letters of codes are drawn as for the held-out split.
    """
    held = {w.lower() for k, v in WORDS["heldout"].items() if isinstance(v, list) for w in v}
    names = vocabulary("heldout")
    held |= {part for name in names["tools"] | names["args"] for part in name.split("_")} | names["args"]
    r = random.Random(f"{seed}:words")
    found = sorted({w for c in doc_qa for w in re.findall(r"\b[a-z]{3,10}\b", c["messages"][-1]["content"])})
    pool = [w for w in dict.fromkeys(found + [_pseudo_word(r) for _ in range(n_pseudo)]) if w not in held]
    small = WORDS["train"]
    big = {k: pool for k in ("surname", "word", "thing", "thing2", "dir", "org")}
    return small | big | {"city": [w.capitalize() for w in pool] , "suffix": small["suffix"] + pool[::7]}


def conversations(split: str, n: int, seed: str = "tools-v1", doc_qa: list[dict] | None = None,
                  lookups: list[tuple[str, str]] | None = None, avoid: set[str] | None = None) -> list[dict]:
    """``n`` tool conversations of one split.

    ``doc_qa``: text-corpus conversations (system, messages) to ask with tools offered, answered in
    text; ``lookups``: (dotted name, documentation answer) pairs for the documentation tool;
    ``avoid``: identifiers that must not appear (the held-out ones, when drawing training).
    """
    r = random.Random(f"{seed}:{split}")
    fams = _same(list(FAMILIES), split)
    words = WORDS[split] if split == "heldout" else training_words(doc_qa or [], seed)
    avoid = avoid or set()
    out: list[dict] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        kind = r.choices(KINDS[split], weights=KIND_WEIGHTS[split])[0]
        conv = _conversation(r, kind, fams, words, doc_qa or [], lookups or [], avoid, split)
        if conv is None:
            continue
        text = (conv["system"] or "") + " ".join(m["content"] for m in conv["messages"])
        if find_blocked(text):
            continue
        out.append(conv)
    return out


def _echo_conversation(r, fams, words, avoid, split) -> dict:
    """A copying drill (training only): questions like the calls' own, each asked for the identifier it names,
    answered by the identifier exactly as a call's argument writes it. Three to five turns, no tools: dense
    practice at finding the identifier in a question and copying it, which a call's single argument gives
    once per few hundred tokens of tool definitions."""
    msgs = []
    base = r.choice(BASE_SYSTEMS)
    for _ in range(r.randint(3, 5)):
        d = _draw(r, fams, words, [], avoid)
        ask = r.choice(ECHO_ASKS).format(noun=d.fam.noun)
        msgs += [{"role": "user", "content": f"{d.question} {ask}"}, {"role": "assistant", "content": str(d.ident)}]
    return {"split": split, "kind": "echo", "family": "echo", "base": base, "system": base, "messages": msgs}


def _conversation(r, kind, fams, words, doc_qa, lookups, avoid, split) -> dict | None:
    if kind == "echo":
        return _echo_conversation(r, fams, words, avoid, split)
    if lookups and kind != "text" and r.random() < 0.12:
        return _lookup_conversation(r, kind, fams, words, lookups, avoid, split)
    d = _draw(r, fams, words, lookups, avoid)
    rec = {"split": split, "kind": kind, "family": d.fam.noun, "base": d.system}
    if kind == "call":
        return rec | {"system": tools_system_prompt(d.system, d.tools), "tools": d.tools,
                      "messages": [{"role": "user", "content": d.question},
                                   {"role": "assistant", "content": tool_call_text(d.tool["name"], _compact(d.call_input))}],
                      "call": {"name": d.tool["name"], "input": d.call_input, "style": r.choice(["tool", "any"])},
                      "ident": d.ident}
    if kind == "result":
        content, answer, key = (_error if r.random() < 0.2 else _success)(r, d)
        is_error = content.endswith(("not found", "denied", "timed out", "(503)"))
        return rec | {"system": tools_system_prompt(d.system, d.tools), "tools": d.tools,
                      "messages": [{"role": "user", "content": d.question},
                                   {"role": "assistant", "content": tool_call_text(d.tool["name"], _compact(d.call_input))},
                                   {"role": "user", "content": tool_result_text(content, is_error)},
                                   {"role": "assistant", "content": answer}],
                      "result": {"content": content, "is_error": is_error}, "key": key, "ident": d.ident}
    # text: a question the tools need not (documentation, thanks) or cannot (its tool is missing) answer
    roll = r.random()
    tools = [t for t in d.tools if t is not d.tool] or [tool_definition(r.choice([f for f in fams if f is not d.fam]), r)[0]]
    if roll < 0.55 and doc_qa:
        qa = r.choice(doc_qa)
        q, a = qa["messages"][0]["content"], qa["messages"][-1]["content"]
        tools, why = d.tools, "docs"
    elif roll < 0.85:
        names = " and ".join(t["description"].rstrip(".").lower() for t in tools[:2])
        q, a, why = d.question, f"I can't check that with the tools I have here: they only cover {names}.", "missing"
    elif roll < 0.93:
        q, a = r.choice(THANKS)
        tools, why = d.tools, "chat"
    else:
        t = r.choice(d.tools)
        q = r.choice(["What does the {} tool do?", "What is {} for?", "Explain the {} tool."]).format(t["name"])
        a = f"{t['name']}: {t['description']}"
        tools, why = d.tools, "about"
    return rec | {"system": tools_system_prompt(d.system, tools), "tools": tools, "why": why,
                  "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def _lookup_conversation(r, kind, fams, words, lookups, avoid, split) -> dict:
    name, doc = r.choice(lookups)
    tool = _lookup_tool(split)
    arg = next(iter(tool["input_schema"]["properties"]))
    others = [tool_definition(f, r)[0] for f in r.sample(fams, r.randint(0, 2))]
    tools = others + [tool]
    r.shuffle(tools)
    base = r.choice(BASE_SYSTEMS)
    system = tools_system_prompt(base, tools)
    shown = r.choice(QUOTES).format(name)
    q = r.choice(["Look up {} in the docs.", "What does the documentation say about {}?", "Check the reference for {}.",
                  "Find the docs of {}, please."]).format(shown)
    call = tool_call_text(tool["name"], _compact({arg: name}))
    rec = {"split": split, "family": "docs", "base": base, "system": system, "tools": tools, "ident": name}
    if kind == "call":
        return rec | {"kind": "call", "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": call}],
                      "call": {"name": tool["name"], "input": {arg: name}, "style": r.choice(["tool", "any"])}}
    answer = _first_sentence(doc)
    return rec | {"kind": "result", "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": call},
                                                 {"role": "user", "content": tool_result_text(doc)},
                                                 {"role": "assistant", "content": answer}],
                  "result": {"content": doc, "is_error": False}, "key": " ".join(answer.split()[:4])}


def identifiers(convs: list[dict]) -> set[str]:
    return {str(c["ident"]) for c in convs if "ident" in c}


def vocabulary(split: str) -> dict[str, set[str]]:
    """The tool names, argument names and identifier words a split's families use."""
    fams = _same(list(FAMILIES), split)
    args = {f.arg for f in fams} | {e.name for f in fams for e in f.extras}
    return {"tools": {t for f in fams for t in f.tools} | {_lookup_tool(split)["name"]},
            "args": args | set(_lookup_tool(split)["input_schema"]["properties"])}


def build(n_train: int, n_heldout: int, doc_train: list[dict], doc_val: list[dict], seed: str = "tools-v1") -> dict[str, list[dict]]:
    """Both splits. Documentation questions and lookups come from the text corpus's own splits
    (validation passages for the held-out one); held-out identifiers are kept out of training."""
    def lookups(rows):
        out = []
        for c in rows:
            m = _DOTTED.search(c["messages"][0]["content"]) if c.get("kind") == "api" else None
            if m:
                out.append((m.group(1), c["messages"][-1]["content"]))
        return out

    held = conversations("heldout", n_heldout, seed, doc_val, lookups(doc_val))
    avoid = identifiers(held)
    train = conversations("train", n_train, seed, doc_train, lookups(doc_train), avoid)
    return {"train": train, "heldout": held}


def encode_conversation(tok, conv: dict) -> list[int]:
    """The conversation's ids as the model reads them in training, ending with ``<|end|>``.

    A call conversation's call is cut into tokens the way the engine produces it (``style``):
    ``tool``: the forced ``tool_use NAME\\n`` then the JSON; ``any``: ``tool_use `` then the
    name line then the JSON. Every other conversation is the chat template, closed.
    """
    end = tok.special_id("<|end|>")
    msgs = [(m["role"], m["content"]) for m in conv["messages"]]
    call = conv.get("call")
    if call is None:
        return tok.encode_chat(conv["system"], msgs, add_generation_prompt=False) + ([end] if msgs[-1][0] == "assistant" else [])
    ids = tok.encode_chat(conv["system"], msgs[:-1], add_generation_prompt=True)
    if call["style"] == "tool":
        ids += tok.encode(f"{TOOL_USE_PREFIX}{call['name']}\n")
    else:
        ids += tok.encode(TOOL_USE_PREFIX) + tok.encode(call["name"] + "\n")
    return ids + tok.encode(_compact(call["input"])) + [end]
