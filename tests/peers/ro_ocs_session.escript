#!/usr/bin/env escript
%%! -smp enable
%% ro_ocs_session.escript -- an online charging server (Ro: RFC 4006 Credit-Control, 3GPP
%% TS 32.299) on Erlang/OTP diameter that keeps credit-control SESSIONS, for the Ro client
%% role test (tests/tests/roles_ro_client.rs, cfg-examples/roles/kamailio-ro-client.cfg).
%% tests/peers/ro_ocs.escript is the bench's stateless OCS; this one grants short quotas,
%% refuses some users and sends Re-Auth and Abort-Session requests when told to.
%% Loopback only; exits by itself after --duration.
%%
%%   ro_ocs_session.escript --port P --ctl-port C [--host ocs.test.local] [--realm test.local]
%%       [--grant 2] [--validity 30] [--deny "bob,..."] [--deny-update "carol,..."]
%%       [--drop "frank,..."] [--drop-update "gina,..."]
%%       [--duration 120]
%%
%% Users are the user part of the CCR's Subscription-Id-Data (END_USER_SIP_URI).
%% CCR-Initial: 4012 DIAMETER_CREDIT_LIMIT_REACHED for --deny users, else 2001 with, in each
%%   Multiple-Services-Credit-Control, Granted-Service-Unit CC-Time --grant seconds,
%%   Validity-Time --validity and Result-Code 2001 (RFC 4006 §8.16, §8.17, §8.33).
%% CCR-Update: the same grant, or 4012 for --deny-update users (their balance is used up).
%% --drop users: their CCR-Initial is printed (-> drop) and never answered (an OCS down);
%% --drop-update users: the same for their CCR-Updates (the request number still counts).
%% CCR-Terminate: 2001, no grant. Every CCR is checked against the session: CC-Request-Number
%%   must be the previous one + 1 (RFC 4006 §8.2), the Session-Id one the OCS knows (else
%%   5002 DIAMETER_UNKNOWN_SESSION_ID); the check's outcome is in the printed line.
%%
%% Every CCR is printed on stdout as
%%   "CCR type=<1|2|3> num=<n> sid=<Session-Id> user=<u> ctx=<Service-Context-Id>
%%    rsu=<requested CC-Time|-> usu=<used CC-Time|-> reason=<Reporting-Reason|->
%%    calling=<Calling-Party-Address|-> called=<Called-Party-Address|->
%%    cause=<Termination-Cause|-> seq=<ok|bad> -> <rc|drop>"
%%
%% Control commands (one line each, one line back):
%%   up [SECONDS]   -> "UP <peer host>" once a peer is up, or "ERROR not up"
%%   sid USER       -> "SID <Session-Id of USER's last CCR-Initial>" or "ERROR none"
%%   rar SID        -> sends RAR (Re-Auth-Request-Type AUTHORIZE_ONLY) for the session
%%   asr SID        -> sends ASR for the session
%% An answer comes back as "ANSWER cmd=<code> rc=<Result-Code> sid=<Session-Id>", a failure
%% as "ERROR <reason>".
-mode(compile).
-export([main/1, peer_up/3, peer_down/3, pick_peer/4, prepare_request/3, prepare_retransmit/3,
         handle_answer/4, handle_error/4, handle_request/3]).

-include_lib("diameter/include/diameter.hrl").

%% Strict: every AVP the Ro client sends is defined here (3GPP ones with their vendor), so a
%% wrong type, flag or layout is a decode error this OCS reports (it answers 5xxx then).
-define(CC_DIA, <<"
@id 4
@name ro_sess_dict
@prefix ro_sess
@vendor 10415 3GPP
@inherits diameter_gen_base_rfc6733
@avp_types
   CC-Request-Number 415 Unsigned32 M
   CC-Request-Type 416 Enumerated M
   CC-Time 420 Unsigned32 M
   Granted-Service-Unit 431 Grouped M
   Rating-Group 432 Unsigned32 M
   Requested-Service-Unit 437 Grouped M
   Service-Identifier 439 Unsigned32 M
   Subscription-Id 443 Grouped M
   Subscription-Id-Data 444 UTF8String M
   Used-Service-Unit 446 Grouped M
   Validity-Time 448 Unsigned32 M
   Subscription-Id-Type 450 Enumerated M
   Multiple-Services-Indicator 455 Enumerated M
   Multiple-Services-Credit-Control 456 Grouped M
   Service-Context-Id 461 UTF8String M
   Role-Of-Node 829 Enumerated MV
   Calling-Party-Address 831 UTF8String MV
   Called-Party-Address 832 UTF8String MV
   Node-Functionality 862 Enumerated MV
   Reporting-Reason 872 Enumerated MV
   Service-Information 873 Grouped MV
   IMS-Information 876 Grouped MV
@grouped
   Subscription-Id ::= < AVP Header: 443 >
          { Subscription-Id-Type }
          { Subscription-Id-Data }
   Requested-Service-Unit ::= < AVP Header: 437 >
          [ CC-Time ]
   Used-Service-Unit ::= < AVP Header: 446 >
          [ Reporting-Reason ]
          [ CC-Time ]
   Granted-Service-Unit ::= < AVP Header: 431 >
          [ CC-Time ]
   Multiple-Services-Credit-Control ::= < AVP Header: 456 >
          [ Granted-Service-Unit ]
          [ Requested-Service-Unit ]
        * [ Used-Service-Unit ]
        * [ Service-Identifier ]
          [ Rating-Group ]
          [ Validity-Time ]
          [ Result-Code ]
   IMS-Information ::= < AVP Header: 876 >
          { Node-Functionality }
          [ Role-Of-Node ]
        * [ Calling-Party-Address ]
          [ Called-Party-Address ]
   Service-Information ::= < AVP Header: 873 >
          [ IMS-Information ]
@messages
   CCR ::= < Diameter Header: 272, REQ, PXY >
          < Session-Id >
          { Origin-Host }
          { Origin-Realm }
          { Destination-Realm }
          { Auth-Application-Id }
          { Service-Context-Id }
          { CC-Request-Type }
          { CC-Request-Number }
          [ Destination-Host ]
          [ User-Name ]
          [ Origin-State-Id ]
          [ Event-Timestamp ]
        * [ Subscription-Id ]
          [ Termination-Cause ]
          [ Multiple-Services-Indicator ]
        * [ Multiple-Services-Credit-Control ]
          [ Service-Information ]
        * [ Proxy-Info ]
        * [ Route-Record ]
   CCA ::= < Diameter Header: 272, PXY >
          < Session-Id >
          { Result-Code }
          { Origin-Host }
          { Origin-Realm }
          { Auth-Application-Id }
          { CC-Request-Type }
          { CC-Request-Number }
        * [ Multiple-Services-Credit-Control ]
          [ Failed-AVP ]
        * [ Proxy-Info ]
   RAR ::= < Diameter Header: 258, REQ, PXY >
          < Session-Id >
          { Origin-Host }
          { Origin-Realm }
          { Destination-Realm }
          { Destination-Host }
          { Auth-Application-Id }
          { Re-Auth-Request-Type }
          [ User-Name ]
          [ Origin-State-Id ]
        * [ Proxy-Info ]
        * [ Route-Record ]
   RAA ::= < Diameter Header: 258, PXY >
          < Session-Id >
          { Result-Code }
          { Origin-Host }
          { Origin-Realm }
          [ User-Name ]
          [ Origin-State-Id ]
          [ Error-Message ]
          [ Error-Reporting-Host ]
          [ Failed-AVP ]
        * [ Proxy-Info ]
   ASR ::= < Diameter Header: 274, REQ, PXY >
          < Session-Id >
          { Origin-Host }
          { Origin-Realm }
          { Destination-Realm }
          { Destination-Host }
          { Auth-Application-Id }
          [ User-Name ]
          [ Origin-State-Id ]
        * [ Proxy-Info ]
        * [ Route-Record ]
   ASA ::= < Diameter Header: 274, PXY >
          < Session-Id >
          { Result-Code }
          { Origin-Host }
          { Origin-Realm }
          [ User-Name ]
          [ Origin-State-Id ]
          [ Error-Message ]
          [ Error-Reporting-Host ]
          [ Failed-AVP ]
        * [ Proxy-Info ]
@enum CC-Request-Type
   INITIAL_REQUEST 1
   UPDATE_REQUEST 2
   TERMINATION_REQUEST 3
   EVENT_REQUEST 4
@enum Subscription-Id-Type
   END_USER_E164 0
   END_USER_IMSI 1
   END_USER_SIP_URI 2
   END_USER_NAI 3
   END_USER_PRIVATE 4
@enum Multiple-Services-Indicator
   MULTIPLE_SERVICES_NOT_SUPPORTED 0
   MULTIPLE_SERVICES_SUPPORTED 1
@enum Role-Of-Node
   ORIGINATING_ROLE 0
   TERMINATING_ROLE 1
   FORWARDING_ROLE 2
@enum Node-Functionality
   S-CSCF 0
   P-CSCF 1
   I-CSCF 2
   MRFC 3
   MGCF 4
   BGCF 5
   AS 6
   IBCF 7
@enum Reporting-Reason
   THRESHOLD 0
   QHT 1
   FINAL 2
   QUOTA_EXHAUSTED 3
   VALIDITY_TIME 4
   OTHER_QUOTA_TYPE 5
   RATING_CONDITION_CHANGE 6
   FORCED_REAUTHORISATION 7
   POOL_EXHAUSTED 8
">>).

-define(CC_APP, 4).
-define(VENDOR_3GPP, 10415).

main(Args) ->
    O = parse(Args, #{}),
    load_dict(),
    ok = diameter:start(),
    Host = opt(host, O, "ocs.test.local"),
    Realm = opt(realm, O, "test.local"),
    ets:new(ocs, [named_table, public, set]),
    ets:insert(ocs, {grant, iopt(grant, O, 2)}),
    ets:insert(ocs, {validity, iopt(validity, O, 30)}),
    ets:insert(ocs, {deny, string:tokens(opt(deny, O, ""), ",")}),
    ets:insert(ocs, {deny_update, string:tokens(opt('deny-update', O, ""), ",")}),
    ets:insert(ocs, {drop, string:tokens(opt(drop, O, ""), ",")}),
    ets:insert(ocs, {drop_update, string:tokens(opt('drop-update', O, ""), ",")}),
    ets:insert(ocs, {peers, []}),
    ok = diameter:start_service(svc, service(Host, Realm)),
    true = diameter:subscribe(svc),
    Port = iopt(port, O, 3868),
    {ok, _} = diameter:add_transport(svc, {listen, [{transport_module, diameter_tcp},
        {transport_config, [{ip, {127,0,0,1}}, {port, Port}, {reuseaddr, true}]},
        {watchdog_config, [{okay, 0}]}]}),
    {ok, L} = gen_tcp:listen(iopt('ctl-port', O, 3870),
                             [list, {packet, line}, {active, false}, {reuseaddr, true},
                              {ip, {127,0,0,1}}]),
    %% diameter_tcp retries a failed listen silently: check that the port really listens.
    wait_listening(Port, 50),
    out("OCS ~s (realm ~s) listening 127.0.0.1:~p, control 127.0.0.1:~s",
        [Host, Realm, Port, opt('ctl-port', O, "3870")]),
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
parse(_, _) -> io:format("usage: see the header of ro_ocs_session.escript~n"), halt(2).

opt(K, M, D) -> maps:get(K, M, D).
iopt(K, M, D) -> list_to_integer(opt(K, M, integer_to_list(D))).

out(Fmt, Args) -> io:format(Fmt ++ "~n", Args).

load_dict() ->
    {ok, [Forms | _]} = diameter_make:codec(?CC_DIA, [return, forms]),
    {ok, Mod, Bin} = compile:forms(Forms, [binary, return_errors]),
    {module, Mod} = code:load_binary(Mod, "ro_sess_dict.erl", Bin).

service(Host, Realm) ->
    [{'Origin-Host', Host}, {'Origin-Realm', Realm},
     {'Vendor-Id', 0}, {'Product-Name', "ro-ocs-session-escript"},
     {'Host-IP-Address', [{127,0,0,1}]},
     {'Supported-Vendor-Id', [?VENDOR_3GPP]},
     {'Auth-Application-Id', [?CC_APP]},
     {decode_format, map}, {string_decode, false},
     {application, [{alias, cc}, {dictionary, ro_sess_dict}, {module, ?MODULE},
                    {answer_errors, callback}, {request_errors, callback}]}].

%% Peer up/down events on stdout, until the deadline.
events(Deadline) ->
    Left = Deadline - erlang:monotonic_time(millisecond),
    case Left =< 0 of
        true -> out("duration elapsed, exiting", []), halt(0);
        false -> ok
    end,
    receive
        #diameter_event{info = Info} when element(1, Info) == up ->
            {_, Caps} = element(3, Info),
            #diameter_caps{origin_host = {_, DH}} = Caps,
            Peer = binary_to_list(iolist_to_binary(DH)),
            ets:insert(ocs, {peers, [Peer]}),
            out("PEER up ~s", [Peer]),
            events(Deadline);
        #diameter_event{info = Info} when element(1, Info) == down ->
            ets:insert(ocs, {peers, []}),
            out("PEER down", []),
            events(Deadline);
        _ -> events(Deadline)
    after min(Left, 1000) -> events(Deadline)
    end.

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
command(["sid", User]) ->
    case ets:lookup(ocs, {last_sid, User}) of
        [{_, Sid}] -> "SID " ++ binary_to_list(Sid);
        [] -> "ERROR none"
    end;
%% RFC 4006 §5.5: the server asks for re-authorization; the client answers and sends a
%% CCR-Update at once.
command(["rar", Sid]) ->
    call(['RAR', {'Session-Id', Sid}, {'Auth-Application-Id', ?CC_APP},
          {'Re-Auth-Request-Type', 0}]);
%% RFC 6733 §8.5 and RFC 4006 §7 ("user service terminated"): the server ends the session;
%% the client answers, stops the service and reports the final usage with a CCR-Terminate.
command(["asr", Sid]) ->
    call(['ASR', {'Session-Id', Sid}, {'Auth-Application-Id', ?CC_APP}]);
command(Other) -> io_lib:format("ERROR unknown command ~p", [Other]).

wait_up(0) -> "ERROR not up";
wait_up(N) ->
    case ets:lookup(ocs, peers) of
        [{peers, [P | _]}] -> "UP " ++ P;
        _ -> timer:sleep(100), wait_up(N - 1)
    end.

call(Msg) ->
    case diameter:call(svc, cc, Msg, [{timeout, 5000}]) of
        {ok, #diameter_packet{header = H, msg = [_ | Map]}} when is_map(Map) ->
            io_lib:format("ANSWER cmd=~p rc=~p sid=~s",
                          [H#diameter_header.cmd_code, maps:get('Result-Code', Map, 0),
                           maps:get('Session-Id', Map, <<>>)]);
        {ok, #diameter_packet{header = H, errors = E}} ->
            io_lib:format("ERROR answer cmd=~p undecoded ~0p", [H#diameter_header.cmd_code, E]);
        {error, R} -> io_lib:format("ERROR ~0p", [R]);
        Other -> io_lib:format("ERROR ~0p", [Other])
    end.

%% ---------------- diameter callbacks ----------------
peer_up(_Svc, _Peer, State) -> State.
peer_down(_Svc, _Peer, State) -> State.
pick_peer([Peer | _], _, _Svc, _State) -> {ok, Peer};
pick_peer([], _, _Svc, _State) -> false.

%% RAR and ASR go to the client that holds the session (RFC 6733 §6.1: Destination-Host of
%% the peer that sent the CCRs); the Session-Id is the session's own.
prepare_request(#diameter_packet{msg = [Name | Avps]}, _Svc, {_, Caps}) ->
    #diameter_caps{origin_host = {OH, DH}, origin_realm = {OR, DR}} = Caps,
    {send, [Name, {'Origin-Host', OH}, {'Origin-Realm', OR}, {'Destination-Host', DH},
            {'Destination-Realm', DR} | Avps]}.

prepare_retransmit(P, Svc, Peer) -> prepare_request(P, Svc, Peer).
handle_answer(#diameter_packet{} = P, _Req, _Svc, _Peer) -> {ok, P}.
handle_error(Reason, _Req, _Svc, _Peer) -> {error, Reason}.

handle_request(#diameter_packet{msg = ['CCR' | Req], errors = Errors}, _Svc, {_, Caps}) ->
    #diameter_caps{origin_host = {OH, _}, origin_realm = {OR, _}} = Caps,
    Sid = maps:get('Session-Id', Req),
    Type = maps:get('CC-Request-Type', Req),
    Num = maps:get('CC-Request-Number', Req),
    User = user_of(maps:get('Subscription-Id', Req, [])),
    Mscc = maps:get('Multiple-Services-Credit-Control', Req, []),
    %% RFC 4006 §8.2: 0 for the first request of a session, then one more per request
    Prev = case ets:lookup(ocs, {num, Sid}) of [{_, P}] -> P; [] -> none end,
    Seq = case {Type, Prev} of
              {1, none} when Num == 0 -> ok;
              {T, P2} when T > 1, is_integer(P2), Num == P2 + 1 -> ok;
              _ -> bad
          end,
    Rc = case {Errors, Type, Prev} of
             {[_ | _], _, _} -> 5004;
             {_, 1, _} -> case member(drop, User) of
                              true -> drop;
                              false -> deny(deny, User)
                          end;
             {_, T2, none} when T2 > 1 -> 5002;
             {_, 2, _} -> case member(drop_update, User) of
                              true -> drop;
                              false -> deny(deny_update, User)
                          end;
             _ -> 2001
         end,
    out("CCR type=~p num=~p sid=~s user=~s ctx=~s rsu=~s usu=~s reason=~s calling=~s "
        "called=~s cause=~s seq=~s -> ~p~s",
        [Type, Num, Sid, User, maps:get('Service-Context-Id', Req), rsu(Mscc), usu(Mscc),
         reason(Mscc), party('Calling-Party-Address', Req), party('Called-Party-Address', Req),
         join(as_list(maps:get('Termination-Cause', Req, []))), Seq, Rc, errors(Errors)]),
    case Type of
        1 -> ets:insert(ocs, {{last_sid, User}, Sid});
        _ -> ok
    end,
    answer(Rc, Type, Num, Sid, Mscc, OH, OR);
handle_request(#diameter_packet{header = H}, _Svc, _Peer) ->
    out("REQUEST cmd=~p not served here: 3001", [H#diameter_header.cmd_code]),
    {answer_message, 3001}.

answer(drop, 1, _Num, _Sid, _Mscc, _OH, _OR) -> discard;
answer(drop, _Type, Num, Sid, _Mscc, _OH, _OR) ->
    ets:insert(ocs, {{num, Sid}, Num}),
    discard;
answer(Rc, Type, Num, Sid, Mscc, OH, OR) ->
    case {Type, Rc} of
        {3, _} -> ets:delete(ocs, {num, Sid});
        {_, 2001} -> ets:insert(ocs, {{num, Sid}, Num});
        _ -> ets:delete(ocs, {num, Sid})   % RFC 4006 §7: a failed CCA ends the session
    end,
    [{grant, G}] = ets:lookup(ocs, grant),
    [{validity, V}] = ets:lookup(ocs, validity),
    Grants = case {Type, Rc} of
                 {T3, 2001} when T3 < 3 ->
                     [#{'Granted-Service-Unit' => [#{'CC-Time' => [G]}],
                        'Rating-Group' => maps:get('Rating-Group', M, []),
                        'Service-Identifier' => maps:get('Service-Identifier', M, []),
                        'Validity-Time' => [V], 'Result-Code' => [2001]} || M <- Mscc];
                 _ -> []
             end,
    {reply, ['CCA' | #{'Session-Id' => Sid, 'Result-Code' => Rc,
                       'Origin-Host' => OH, 'Origin-Realm' => OR,
                       'Auth-Application-Id' => ?CC_APP,
                       'CC-Request-Type' => Type, 'CC-Request-Number' => Num,
                       'Multiple-Services-Credit-Control' => Grants}]}.

deny(Key, User) ->
    case member(Key, User) of true -> 4012; false -> 2001 end.

member(Key, User) ->
    [{Key, Users}] = ets:lookup(ocs, Key),
    lists:member(User, Users).

%% "sip:alice@test.local" -> "alice"
user_of([#{'Subscription-Id-Data' := D} | _]) ->
    S = binary_to_list(iolist_to_binary(D)),
    hd(string:split(lists:last(string:split(S, ":")), "@"));
user_of(_) -> "-".

units(Key, Mscc) ->
    [C || M <- Mscc, U <- as_list(maps:get(Key, M, [])), C <- maps:get('CC-Time', U, [])].

rsu(Mscc) -> join(units('Requested-Service-Unit', Mscc)).
usu(Mscc) -> join(units('Used-Service-Unit', Mscc)).
reason(Mscc) ->
    join([R || M <- Mscc, U <- as_list(maps:get('Used-Service-Unit', M, [])),
               R <- maps:get('Reporting-Reason', U, [])]).

party(Key, Req) ->
    Vals = [V || #{'IMS-Information' := Ims} <- as_list(maps:get('Service-Information', Req, [])),
                 I <- as_list(Ims), V <- as_list(maps:get(Key, I, []))],
    case Vals of [] -> "-"; _ -> lists:join(",", [binary_to_list(iolist_to_binary(X)) || X <- Vals]) end.

as_list(L) when is_list(L) -> L;
as_list(X) -> [X].

join([]) -> "-";
join(L) -> lists:join(",", [integer_to_list(X) || X <- L]).

errors([]) -> "";
errors(E) -> io_lib:format(" errors=~0p", [E]).
