#!/usr/bin/env escript
%%! -smp enable
%% rx_pcrf.escript -- a PCRF, Rx side (3GPP TS 29.214, application 16777236) on Erlang/OTP
%% diameter, for the test of a P-CSCF written in a SIP script
%% (cfg-examples/roles/kamailio-pcscf.cfg). The opposite of tests/peers/rx_af.escript.
%% Loopback only; exits by itself after --duration.
%%
%% It listens for the P-CSCF's Diameter node, answers every AA-Request and
%% Session-Termination-Request, and sends Re-Auth and Abort-Session requests for a session when
%% told to on a line-based control port:
%%
%%   rx_pcrf.escript --port P --ctl-port C [--host pcrf.test.local] [--realm pcrf.test.local]
%%                   [--aar "mallory=e5063,eve=e5065"] [--duration 120]
%%
%% --aar: the AAA's outcome per user (the user part of the Subscription-Id-Data SIP URI);
%%        N = Result-Code N, eN = Experimental-Result (3GPP) N, drop = no answer at all;
%%        anyone else gets 2001, and the session is kept (until its STR) for rar/asr.
%%
%% Control commands (one line each, one line back):
%%   up [SECONDS]            -> "UP <peer host>" once a peer is up, or "ERROR not up"
%%   last                    -> "SESSION <Session-Id>" of the last session authorised
%%   rar SID ACTION[,ACTION] -> sends RAR with those Specific-Action values
%%   asr SID [ABORT-CAUSE]   -> sends ASR (Abort-Cause, default 0 BEARER_RELEASED)
%% An answer comes back as
%%   "ANSWER cmd=<code> e=<0|1> rc=<Result-Code|0> exp=<Experimental-Result-Code|0> sid=<sid>"
%%   (or "ANSWER cmd=<code> undecoded <errors>"), a failure as "ERROR <reason>".
%% Every request received is printed on stdout:
%%   "AAR sid=<sid> sub=<Subscription-Id-Data> mcd=<count> errors=<decode errors> -> <outcome>"
%%   "STR sid=<sid> cause=<Termination-Cause> known=<0|1> errors=<decode errors>"
%% This peer's codec is strict: AVPs of the AAR's ABNF with a wrong type or length, or a
%% missing { Auth-Application-Id }, show up in errors=.
-mode(compile).
-export([main/1, peer_up/3, peer_down/3, pick_peer/4, prepare_request/3, prepare_retransmit/3,
         handle_answer/4, handle_error/4, handle_request/3]).

-include_lib("diameter/include/diameter.hrl").

-define(RX_DIA, <<"
@id 16777236
@name rx_pcrf_dict
@prefix rxp
@vendor 10415 3GPP
@inherits diameter_gen_base_rfc6733
@avp_types
   Framed-IP-Address 8 OctetString M
   Subscription-Id 443 Grouped M
   Subscription-Id-Data 444 UTF8String M
   Subscription-Id-Type 450 Enumerated M
   Abort-Cause 500 Enumerated MV
   AF-Application-Identifier 504 OctetString MV
   Flow-Description 507 IPFilterRule MV
   Flow-Number 509 Unsigned32 MV
   Flow-Status 511 Enumerated MV
   Flow-Usage 512 Enumerated MV
   Specific-Action 513 Enumerated MV
   Max-Requested-Bandwidth-DL 515 Unsigned32 MV
   Max-Requested-Bandwidth-UL 516 Unsigned32 MV
   Media-Component-Description 517 Grouped MV
   Media-Component-Number 518 Unsigned32 MV
   Media-Sub-Component 519 Grouped MV
   Media-Type 520 Enumerated MV
   Rx-Request-Type 533 Enumerated MV
@grouped
   Subscription-Id ::= < AVP Header: 443 >
          { Subscription-Id-Type }
          { Subscription-Id-Data }
   Media-Component-Description ::= < AVP Header: 517 >
          { Media-Component-Number }
        * [ Media-Sub-Component ]
          [ AF-Application-Identifier ]
          [ Media-Type ]
          [ Max-Requested-Bandwidth-UL ]
          [ Max-Requested-Bandwidth-DL ]
          [ Flow-Status ]
        * [ AVP ]
   Media-Sub-Component ::= < AVP Header: 519 >
          { Flow-Number }
      0*2 [ Flow-Description ]
          [ Flow-Status ]
          [ Flow-Usage ]
          [ Max-Requested-Bandwidth-UL ]
          [ Max-Requested-Bandwidth-DL ]
        * [ AVP ]
@messages
   AAR ::= < Diameter Header: 265, REQ, PXY >
          < Session-Id >
          { Auth-Application-Id }
          { Origin-Host }
          { Origin-Realm }
          { Destination-Realm }
          [ Destination-Host ]
          [ AF-Application-Identifier ]
        * [ Media-Component-Description ]
        * [ Specific-Action ]
        * [ Subscription-Id ]
          [ Framed-IP-Address ]
          [ Rx-Request-Type ]
        * [ AVP ]
   AAA ::= < Diameter Header: 265, PXY >
          < Session-Id >
          { Auth-Application-Id }
          { Origin-Host }
          { Origin-Realm }
          [ Result-Code ]
          [ Experimental-Result ]
          [ Auth-Session-State ]
        * [ AVP ]
   STR ::= < Diameter Header: 275, REQ, PXY >
          < Session-Id >
          { Origin-Host }
          { Origin-Realm }
          { Destination-Realm }
          { Auth-Application-Id }
          { Termination-Cause }
          [ Destination-Host ]
        * [ AVP ]
   STA ::= < Diameter Header: 275, PXY >
          < Session-Id >
          { Origin-Host }
          { Origin-Realm }
          [ Result-Code ]
        * [ AVP ]
   RAR ::= < Diameter Header: 258, REQ, PXY >
          < Session-Id >
          { Origin-Host }
          { Origin-Realm }
          { Destination-Realm }
          { Destination-Host }
          { Auth-Application-Id }
       1* { Specific-Action }
        * [ AVP ]
   RAA ::= < Diameter Header: 258, PXY >
          < Session-Id >
          { Origin-Host }
          { Origin-Realm }
          [ Result-Code ]
          [ Experimental-Result ]
        * [ AVP ]
   ASR ::= < Diameter Header: 274, REQ, PXY >
          < Session-Id >
          { Origin-Host }
          { Origin-Realm }
          { Destination-Realm }
          { Destination-Host }
          { Auth-Application-Id }
          { Abort-Cause }
        * [ AVP ]
   ASA ::= < Diameter Header: 274, PXY >
          < Session-Id >
          { Origin-Host }
          { Origin-Realm }
          [ Result-Code ]
        * [ AVP ]
@enum Subscription-Id-Type
   END_USER_E164 0
   END_USER_IMSI 1
   END_USER_SIP_URI 2
   END_USER_NAI 3
   END_USER_PRIVATE 4
@enum Abort-Cause
   BEARER_RELEASED 0
   INSUFFICIENT_SERVER_RESOURCES 1
   INSUFFICIENT_BEARER_RESOURCES 2
@enum Flow-Status
   ENABLED-UPLINK 0
   ENABLED-DOWNLINK 1
   ENABLED 2
   DISABLED 3
   REMOVED 4
@enum Flow-Usage
   NO_INFORMATION 0
   RTCP 1
   AF_SIGNALLING 2
@enum Specific-Action
   CHARGING_CORRELATION_EXCHANGE 1
   INDICATION_OF_LOSS_OF_BEARER 2
   INDICATION_OF_RECOVERY_OF_BEARER 3
   INDICATION_OF_RELEASE_OF_BEARER 4
   IP-CAN_CHANGE 6
   INDICATION_OF_OUT_OF_CREDIT 7
   INDICATION_OF_SUCCESSFUL_RESOURCES_ALLOCATION 8
   INDICATION_OF_FAILED_RESOURCES_ALLOCATION 9
@enum Media-Type
   AUDIO 0
   VIDEO 1
   DATA 2
   APPLICATION 3
   CONTROL 4
   TEXT 5
   MESSAGE 6
   OTHER 4294967295
@enum Rx-Request-Type
   INITIAL_REQUEST 0
   UPDATE_REQUEST 1
">>).

-define(RX_APP, 16777236).
-define(VENDOR_3GPP, 10415).

main(Args) ->
    O = parse(Args, #{}),
    load_dict(),
    ok = diameter:start(),
    Host = opt(host, O, "pcrf.test.local"),
    Realm = opt(realm, O, "pcrf.test.local"),
    ets:new(pcrf, [named_table, public, set]),
    ets:insert(pcrf, {aar, parse_outcomes(opt(aar, O, ""))}),
    ets:insert(pcrf, {peers, []}),
    ets:insert(pcrf, {last, none}),
    ok = diameter:start_service(svc, service(Host, Realm)),
    true = diameter:subscribe(svc),
    Port = iopt(port, O, 3868),
    %% {okay, 0}: a peer that reconnects is usable at once (RFC 3539 REOPEN skipped)
    {ok, _} = diameter:add_transport(svc, {listen, [{transport_module, diameter_tcp},
        {transport_config, [{ip, {127,0,0,1}}, {port, Port}, {reuseaddr, true}]},
        {watchdog_config, [{okay, 0}]}]}),
    {ok, L} = gen_tcp:listen(iopt('ctl-port', O, 3874),
                             [list, {packet, line}, {active, false}, {reuseaddr, true},
                              {ip, {127,0,0,1}}]),
    %% diameter_tcp retries a failed listen silently: check that the port really listens.
    wait_listening(Port, 50),
    out("PCRF ~s (realm ~s) listening 127.0.0.1:~p, control 127.0.0.1:~s",
        [Host, Realm, Port, opt('ctl-port', O, "3874")]),
    spawn(fun() -> accept(L) end),
    Deadline = erlang:monotonic_time(millisecond) + 1000 * iopt(duration, O, 120),
    events(Deadline).

wait_listening(Port, 0) -> out("listen failed on port ~p", [Port]), halt(1);
wait_listening(Port, N) ->
    case gen_tcp:connect({127,0,0,1}, Port, [], 200) of
        {ok, S} -> gen_tcp:close(S);
        _ -> timer:sleep(100), wait_listening(Port, N - 1)
    end.

parse(["--" ++ K, V | T], M) -> parse(T, M#{list_to_atom(K) => V});
parse([], M) -> M;
parse(_, _) -> io:format("usage: see the header of rx_pcrf.escript~n"), halt(2).

opt(K, M, D) -> maps:get(K, M, D).
iopt(K, M, D) -> list_to_integer(opt(K, M, integer_to_list(D))).

%% "mallory=e5063,bob=5012" -> [{"mallory", {exp, 5063}}, {"bob", {rc, 5012}}]
parse_outcomes(S) ->
    [case string:split(E, "=") of
         [U, "drop"] -> {U, drop};
         [U, "e" ++ C] -> {U, {exp, list_to_integer(C)}};
         [U, C] -> {U, {rc, list_to_integer(C)}}
     end || E <- string:tokens(S, ",")].

out(Fmt, Args) -> io:format(Fmt ++ "~n", Args).

load_dict() ->
    {ok, [Forms | _]} = diameter_make:codec(?RX_DIA, [return, forms]),
    {ok, Mod, Bin} = compile:forms(Forms, [binary, return_errors]),
    {module, Mod} = code:load_binary(Mod, "rx_pcrf_dict.erl", Bin).

service(Host, Realm) ->
    [{'Origin-Host', Host}, {'Origin-Realm', Realm},
     {'Vendor-Id', 0}, {'Product-Name', "rx-pcrf-escript"},
     {'Host-IP-Address', [{127,0,0,1}]},
     {'Supported-Vendor-Id', [?VENDOR_3GPP]},
     {'Auth-Application-Id', [?RX_APP]},
     {decode_format, map}, {string_decode, false},
     {application, [{alias, rx}, {dictionary, rx_pcrf_dict}, {module, ?MODULE},
                    {answer_errors, callback}, {request_errors, callback}]}].

events(Deadline) ->
    Left = Deadline - erlang:monotonic_time(millisecond),
    case Left =< 0 of
        true -> out("duration elapsed, exiting", []), halt(0);
        false -> ok
    end,
    receive
        #diameter_event{info = Info} when element(1, Info) == up ->
            {_, Caps} = element(3, Info),
            Peer = peer_host(Caps),
            ets:insert(pcrf, {peers, [Peer]}),
            out("PEER up ~s", [Peer]),
            events(Deadline);
        #diameter_event{info = Info} when element(1, Info) == down ->
            ets:insert(pcrf, {peers, []}),
            out("PEER down", []),
            events(Deadline);
        _ -> events(Deadline)
    after min(Left, 1000) -> events(Deadline)
    end.

peer_host(#diameter_caps{origin_host = {_, DH}}) -> binary_to_list(iolist_to_binary(DH));
peer_host(_) -> "?".

%% ---------------- control port ----------------
accept(L) ->
    {ok, S} = gen_tcp:accept(L),
    spawn(fun() -> control(S) end),
    accept(L).

control(S) ->
    case gen_tcp:recv(S, 0) of
        {ok, Line} ->
            Reply = try command(string:tokens(string:trim(Line), " "))
                    catch C:R -> io_lib:format("ERROR ~p:~0p", [C, R]) end,
            gen_tcp:send(S, [Reply, "\n"]),
            control(S);
        _ -> gen_tcp:close(S)
    end.

command(["up"]) -> command(["up", "10"]);
command(["up", Secs]) -> wait_up(list_to_integer(Secs) * 10);
command(["last"]) ->
    case ets:lookup(pcrf, last) of
        [{last, none}] -> "ERROR no session authorised";
        [{last, Sid}] -> "SESSION " ++ binary_to_list(Sid)
    end;
command(["rar", Sid, Actions]) ->
    call(['RAR',
          {'Session-Id', list_to_binary(Sid)},
          {'Auth-Application-Id', ?RX_APP},
          {'Specific-Action', [list_to_integer(A) || A <- string:tokens(Actions, ",")]}]);
command(["asr", Sid]) -> command(["asr", Sid, "0"]);
command(["asr", Sid, Cause]) ->
    call(['ASR',
          {'Session-Id', list_to_binary(Sid)},
          {'Auth-Application-Id', ?RX_APP},
          {'Abort-Cause', list_to_integer(Cause)}]);
command(Other) -> io_lib:format("ERROR unknown command ~p", [Other]).

wait_up(0) -> "ERROR not up";
wait_up(N) ->
    case ets:lookup(pcrf, peers) of
        [{peers, [P | _]}] -> "UP " ++ P;
        _ -> timer:sleep(100), wait_up(N - 1)
    end.

call(Msg) ->
    case diameter:call(svc, rx, Msg, [{timeout, 5000}]) of
        {ok, #diameter_packet{} = P} -> describe(P);
        {error, R} -> io_lib:format("ERROR ~0p", [R]);
        Other -> io_lib:format("ERROR ~0p", [Other])
    end.

one(K, M, D) ->
    case maps:get(K, M, []) of
        [V | _] -> V;
        [] -> D;
        V -> V
    end.

describe(#diameter_packet{header = H, msg = [_Name | Map], errors = []}) when is_map(Map) ->
    E = case H#diameter_header.is_error of true -> 1; _ -> 0 end,
    io_lib:format("ANSWER cmd=~p e=~p rc=~p exp=~p sid=~s",
                  [H#diameter_header.cmd_code, E, one('Result-Code', Map, 0),
                   one('Experimental-Result-Code', one('Experimental-Result', Map, #{}), 0),
                   one('Session-Id', Map, <<>>)]);
describe(#diameter_packet{header = H, errors = Errs}) ->
    io_lib:format("ANSWER cmd=~p undecoded ~0p", [H#diameter_header.cmd_code, Errs]).

%% ---------------- diameter callbacks ----------------
peer_up(_Svc, _Peer, State) -> State.
peer_down(_Svc, _Peer, State) -> State.
pick_peer([Peer | _], _, _Svc, _State) -> {ok, Peer};
pick_peer([], _, _Svc, _State) -> false.

%% RAR and ASR go to the P-CSCF's node that holds the session (TS 29.214 §5.6.3, §5.6.7:
%% { Destination-Host } is required): the connected peer.
prepare_request(#diameter_packet{msg = [Name | Avps]}, _Svc, {_, Caps}) ->
    #diameter_caps{origin_host = {OH, DH}, origin_realm = {OR, DR}} = Caps,
    {send, [Name, {'Origin-Host', OH}, {'Origin-Realm', OR}, {'Destination-Host', DH},
            {'Destination-Realm', DR} | Avps]}.

prepare_retransmit(P, Svc, Peer) -> prepare_request(P, Svc, Peer).
handle_answer(#diameter_packet{} = P, _Req, _Svc, _Peer) -> {ok, P}.
handle_error(Reason, _Req, _Svc, _Peer) -> {error, Reason}.

handle_request(#diameter_packet{msg = ['AAR' | Req], errors = Errs}, _Svc, {_, Caps}) ->
    #diameter_caps{origin_host = {OH, _}, origin_realm = {OR, _}} = Caps,
    Sid = maps:get('Session-Id', Req),
    Sub = case maps:get('Subscription-Id', Req, []) of
              [#{'Subscription-Id-Data' := D} | _] -> binary_to_list(iolist_to_binary(D));
              _ -> ""
          end,
    User = hd(string:split(lists:last(string:split(Sub, ":")), "@")),
    [{aar, Table}] = ets:lookup(pcrf, aar),
    Outcome = proplists:get_value(User, Table, {rc, 2001}),
    out("AAR sid=~s sub=~s mcd=~p errors=~p -> ~s",
        [Sid, Sub, length(maps:get('Media-Component-Description', Req, [])), length(Errs),
         outcome(Outcome)]),
    [out("AAR decode error ~0p", [E]) || E <- Errs],
    aaa(Outcome, #{'Session-Id' => Sid, 'Auth-Application-Id' => ?RX_APP,
                   'Origin-Host' => OH, 'Origin-Realm' => OR});
handle_request(#diameter_packet{msg = ['STR' | Req], errors = Errs}, _Svc, {_, Caps}) ->
    #diameter_caps{origin_host = {OH, _}, origin_realm = {OR, _}} = Caps,
    Sid = maps:get('Session-Id', Req),
    Known = case ets:take(pcrf, {session, Sid}) of [] -> 0; _ -> 1 end,
    out("STR sid=~s cause=~p known=~p errors=~p",
        [Sid, maps:get('Termination-Cause', Req, -1), Known, length(Errs)]),
    Rc = case Known of 1 -> 2001; 0 -> 5002 end,
    {reply, ['STA', {'Session-Id', Sid}, {'Origin-Host', OH}, {'Origin-Realm', OR},
             {'Result-Code', Rc}]};
handle_request(#diameter_packet{header = H}, _Svc, _Peer) ->
    out("REQUEST cmd=~p not served here: 3001", [H#diameter_header.cmd_code]),
    {answer_message, 3001}.

%% The AAA for an outcome of --aar (no answer for drop).
aaa(drop, _Base) -> discard;
aaa(Outcome, #{'Session-Id' := Sid} = Base) ->
    Ans = case Outcome of
              {rc, 2001} ->
                  ets:insert(pcrf, {{session, Sid}, true}),
                  ets:insert(pcrf, {last, Sid}),
                  %% STATE_MAINTAINED: the P-CSCF ends the session with STR (TS 29.214 §5.3)
                  Base#{'Result-Code' => [2001], 'Auth-Session-State' => [0]};
              {rc, C} -> Base#{'Result-Code' => [C]};
              {exp, C} -> Base#{'Experimental-Result' =>
                                    [#{'Vendor-Id' => ?VENDOR_3GPP,
                                       'Experimental-Result-Code' => C}]}
          end,
    {reply, ['AAA' | Ans]}.

outcome(drop) -> "no answer";
outcome({rc, C}) -> io_lib:format("Result-Code ~p", [C]);
outcome({exp, C}) -> io_lib:format("Experimental-Result-Code ~p", [C]).
