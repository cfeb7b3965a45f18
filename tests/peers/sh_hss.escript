#!/usr/bin/env escript
%%! -smp enable
%% sh_hss.escript -- an HSS serving the Sh interface (3GPP TS 29.328 / TS 29.329) on
%% Erlang/OTP diameter, for dmbridge's Application Server test (tests/tests/roles_as.rs).
%% Loopback only; exits by itself after --duration.
%%
%% It listens for the AS's Diameter node (the bridge connects to it), answers
%% User-Data-Request (306) and Subscribe-Notifications-Request (308) from per-user XML files,
%% and sends Push-Notification-Requests (309) when told to on a line-based control port:
%%
%%   sh_hss.escript --port P --ctl-port C --data-dir DIR [--host hss.test.local]
%%                  [--realm hss.test.local] [--udr "carol=e5001,dave=e5100"]
%%                  [--state "ivy=0"] [--expiry "kim=3"] [--duration 120]
%%
%% DIR/<user>.xml is the user's Sh-Data document (TS 29.328 Annex D), sent as User-Data: the
%% user is the user part of the Public-Identity inside User-Identity (sip:alice@... -> alice).
%% The files are read at each request, so a test changes a user's data by rewriting the file
%% and then telling the HSS to notify (`pnr`).
%% UDR outcome: --udr names one per user (N = Result-Code N, eN = Experimental-Result N,
%% drop = no answer at all, for the AS's timeout path);
%% otherwise 2001 with the file, or Experimental-Result 4100 DIAMETER_USER_DATA_NOT_AVAILABLE
%% when the user has no file. A UDR for IMSUserState (Data-Reference 11, no
%% Service-Indication) gets 2001 with <Sh-IMS-Data><IMSUserState>N</IMSUserState>: N from
%% --state for the user, else 1 (REGISTERED). Any other UDR or SNR that does not ask for
%% RepositoryData (Data-Reference 0) with a Service-Indication gets 5101
%% DIAMETER_ERROR_OPERATION_NOT_ALLOWED: a request without a Service-Indication cannot name
%% repository data, and this HSS keeps no other data.
%% Subscriptions: --expiry names users whose subscriptions this HSS bounds (TS 29.328 §6.1.3,
%% TS 29.329 §6.1.6): the SNA that subscribes them carries Expiry-Time = now + N seconds, and
%% the subscription ends then (`subs` no longer lists it); the others do not expire.
%%
%% PUR (307, TS 29.329 §6.1.3; TS 29.328 §6.1.2 Sh-Update) writes DIR/<user>.xml when its
%% User-Data is this service's repository data (Data-Reference 0) whose SequenceNumber is the
%% stored one plus 1 (65535 -> 1; 0 for a new document; TS 29.328 §6.1.2), else answers
%% Experimental-Result 5105 DIAMETER_ERROR_TRANSPARENT_DATA_OUT_OF_SYNC and keeps the file;
%% printed as "PUR impu=<...> dref=<n> seq=<new> stored=<old> errors=<n> -> <outcome>".
%% Control commands (one line each, one line back):
%%   up [SECONDS]  -> "UP <peer host>" once a peer is up, or "ERROR not up"
%%   subs          -> "SUBS <impu>/<service-indication>,..." (the SNR subscriptions held)
%%   pnr USER      -> sends PNR with DIR/USER.xml as User-Data (User-Identity sip:USER@test.local)
%% An answer comes back as "ANSWER cmd=<code> e=<0|1> rc=<Result-Code|0>
%% exp=<Experimental-Result-Code|0> sid=<Session-Id>", a failure as "ERROR <reason>".
%% Every UDR and SNR is printed on stdout:
%%   "UDR impu=<Public-Identity> dref=<Data-References> si=<Service-Indications> errors=<n>
%%    -> <outcome>"
%%   "SNR impu=<...> type=<Subs-Req-Type> dref=<...> si=<...> errors=<n> -> <outcome>"
%% errors counts what this peer's codec found wrong in the request (RFC 6733 §7.1 errors).
-mode(compile).
-export([main/1, peer_up/3, peer_down/3, pick_peer/4, prepare_request/3, prepare_retransmit/3,
         handle_answer/4, handle_error/4, handle_request/3]).

-include_lib("diameter/include/diameter.hrl").

%% Sh as TS 29.329 §6.1 defines it, the AVPs this HSS reads or writes with their TS 29.329
%% §6.3 flags (Identity-Set, Expiry-Time and Send-Data-Indication must not have M). Requests
%% keep their required AVPs required, so a request missing one is reported in errors=.
%% The order of the lines is the grammar's (fixed, required, optional), not the wire order of
%% TS 29.329: diameter_make wants it so, and only the fixed Session-Id position is enforced.
-define(SH_DIA, <<"
@id 16777217
@name sh_dict
@prefix sh
@vendor 10415 3GPP
@inherits diameter_gen_base_rfc6733
@avp_types
   Public-Identity 601 UTF8String MV
   Server-Name 602 UTF8String MV
   Supported-Features 628 Grouped V
   Feature-List-ID 629 Unsigned32 V
   Feature-List 630 Unsigned32 V
   Wildcarded-Public-Identity 634 UTF8String V
   User-Identity 700 Grouped MV
   MSISDN 701 OctetString MV
   User-Data 702 OctetString MV
   Data-Reference 703 Enumerated MV
   Service-Indication 704 OctetString MV
   Subs-Req-Type 705 Enumerated MV
   Requested-Domain 706 Enumerated MV
   Identity-Set 708 Enumerated V
   Expiry-Time 709 Time V
   Send-Data-Indication 710 Enumerated V
@grouped
   User-Identity ::= < AVP Header: 700 >
          [ Public-Identity ]
          [ MSISDN ]
        * [ AVP ]
   Supported-Features ::= < AVP Header: 628 >
          { Vendor-Id }
          { Feature-List-ID }
          { Feature-List }
        * [ AVP ]
@messages
   UDR ::= < Diameter Header: 306, REQ, PXY >
          < Session-Id >
          { Vendor-Specific-Application-Id }
          { Auth-Session-State }
          { Origin-Host }
          { Origin-Realm }
          { Destination-Realm }
          { User-Identity }
        1*{ Data-Reference }
          [ Destination-Host ]
        * [ Supported-Features ]
          [ Wildcarded-Public-Identity ]
          [ Server-Name ]
        * [ Service-Indication ]
        * [ Identity-Set ]
          [ Requested-Domain ]
          [ User-Name ]
        * [ AVP ]
        * [ Proxy-Info ]
        * [ Route-Record ]
   UDA ::= < Diameter Header: 306, PXY >
          < Session-Id >
          { Vendor-Specific-Application-Id }
          { Auth-Session-State }
          { Origin-Host }
          { Origin-Realm }
          [ Result-Code ]
          [ Experimental-Result ]
        * [ Supported-Features ]
          [ User-Data ]
        * [ AVP ]
          [ Failed-AVP ]
        * [ Proxy-Info ]
        * [ Route-Record ]
   SNR ::= < Diameter Header: 308, REQ, PXY >
          < Session-Id >
          { Vendor-Specific-Application-Id }
          { Auth-Session-State }
          { Origin-Host }
          { Origin-Realm }
          { Destination-Realm }
          { User-Identity }
          { Subs-Req-Type }
        1*{ Data-Reference }
          [ Destination-Host ]
        * [ Supported-Features ]
          [ Wildcarded-Public-Identity ]
        * [ Service-Indication ]
          [ Send-Data-Indication ]
          [ Server-Name ]
        * [ Identity-Set ]
          [ Expiry-Time ]
          [ User-Name ]
        * [ AVP ]
        * [ Proxy-Info ]
        * [ Route-Record ]
   SNA ::= < Diameter Header: 308, PXY >
          < Session-Id >
          { Vendor-Specific-Application-Id }
          { Auth-Session-State }
          { Origin-Host }
          { Origin-Realm }
          [ Result-Code ]
          [ Experimental-Result ]
        * [ Supported-Features ]
          [ User-Data ]
          [ Expiry-Time ]
        * [ AVP ]
          [ Failed-AVP ]
        * [ Proxy-Info ]
        * [ Route-Record ]
   PUR ::= < Diameter Header: 307, REQ, PXY >
          < Session-Id >
          { Vendor-Specific-Application-Id }
          { Auth-Session-State }
          { Origin-Host }
          { Origin-Realm }
          { Destination-Realm }
          { User-Identity }
          { Data-Reference }
          { User-Data }
          [ Destination-Host ]
        * [ Supported-Features ]
          [ Wildcarded-Public-Identity ]
          [ User-Name ]
        * [ AVP ]
        * [ Proxy-Info ]
        * [ Route-Record ]
   PUA ::= < Diameter Header: 307, PXY >
          < Session-Id >
          { Vendor-Specific-Application-Id }
          { Auth-Session-State }
          { Origin-Host }
          { Origin-Realm }
          [ Result-Code ]
          [ Experimental-Result ]
          [ Wildcarded-Public-Identity ]
        * [ Supported-Features ]
        * [ AVP ]
          [ Failed-AVP ]
        * [ Proxy-Info ]
        * [ Route-Record ]
   PNR ::= < Diameter Header: 309, REQ, PXY >
          < Session-Id >
          { Vendor-Specific-Application-Id }
          { Auth-Session-State }
          { Origin-Host }
          { Origin-Realm }
          { Destination-Host }
          { Destination-Realm }
          { User-Identity }
          { User-Data }
        * [ Supported-Features ]
          [ Wildcarded-Public-Identity ]
          [ User-Name ]
        * [ AVP ]
        * [ Proxy-Info ]
        * [ Route-Record ]
   PNA ::= < Diameter Header: 309, PXY >
          < Session-Id >
          [ Vendor-Specific-Application-Id ]
          [ Result-Code ]
          [ Experimental-Result ]
          [ Auth-Session-State ]
          [ Origin-Host ]
          [ Origin-Realm ]
        * [ Supported-Features ]
        * [ AVP ]
          [ Failed-AVP ]
        * [ Proxy-Info ]
        * [ Route-Record ]
@enum Data-Reference
   RepositoryData 0
   IMSPublicIdentity 10
   IMSUserState 11
@enum Subs-Req-Type
   Subscribe 0
   Unsubscribe 1
">>).

-define(VENDOR_3GPP, 10415).
-define(SH_APP, 16777217).

main(Args) ->
    O = parse(Args, #{}),
    load_dict(),
    ok = diameter:start(),
    Host = opt(host, O, "hss.test.local"),
    Realm = opt(realm, O, "hss.test.local"),
    ets:new(hss, [named_table, public, set]),
    ets:insert(hss, {udr, parse_outcomes(opt(udr, O, ""))}),
    ets:insert(hss, {dir, opt('data-dir', O, ".")}),
    ets:insert(hss, {state, [list_to_tuple(string:split(E, "="))
                             || E <- string:tokens(opt(state, O, ""), ",")]}),
    ets:insert(hss, {expiry, [{U, list_to_integer(N)} || E <- string:tokens(opt(expiry, O, ""), ","),
                                                      [U, N] <- [string:split(E, "=")]]}),
    ets:insert(hss, {subs, []}),
    ets:insert(hss, {peers, []}),
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
    out("Sh HSS ~s (realm ~s) listening 127.0.0.1:~p, control 127.0.0.1:~s",
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
parse(_, _) -> io:format("usage: see the header of sh_hss.escript~n"), halt(2).

opt(K, M, D) -> maps:get(K, M, D).
iopt(K, M, D) -> list_to_integer(opt(K, M, integer_to_list(D))).

%% "carol=e5001,dave=5012" -> [{"carol", {exp, 5001}}, {"dave", {rc, 5012}}]
parse_outcomes(S) ->
    [case string:split(E, "=") of
         [U, "e" ++ C] -> {U, {exp, list_to_integer(C)}};
         [U, "drop"] -> {U, drop};
         [U, C] -> {U, {rc, list_to_integer(C)}}
     end || E <- string:tokens(S, ",")].

out(Fmt, Args) -> io:format(Fmt ++ "~n", Args).

load_dict() ->
    {ok, [Forms | _]} = diameter_make:codec(?SH_DIA, [return, forms]),
    {ok, Mod, Bin} = compile:forms(Forms, [binary, return_errors]),
    {module, Mod} = code:load_binary(Mod, "sh_dict.erl", Bin).

service(Host, Realm) ->
    [{'Origin-Host', Host}, {'Origin-Realm', Realm},
     {'Vendor-Id', 0}, {'Product-Name', "sh-hss-escript"},
     {'Host-IP-Address', [{127,0,0,1}]},
     {'Supported-Vendor-Id', [?VENDOR_3GPP]},
     {'Vendor-Specific-Application-Id',
      [[{'Vendor-Id', ?VENDOR_3GPP}, {'Auth-Application-Id', [?SH_APP]}]]},
     {decode_format, map}, {string_decode, false},
     {application, [{alias, sh}, {dictionary, sh_dict}, {module, ?MODULE},
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
            ets:insert(hss, {peers, [Peer]}),
            out("PEER up ~s", [Peer]),
            events(Deadline);
        #diameter_event{info = Info} when element(1, Info) == down ->
            ets:insert(hss, {peers, []}),
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
command(["subs"]) ->
    "SUBS " ++ lists:join(",", [[I, "/", S] || {I, S} <- lists:sort(live_subs())]);
command(["pnr", User]) ->
    case user_data(User) of
        {ok, Xml} ->
            call(['PNR',
                  {'Vendor-Specific-Application-Id', vsai()},
                  {'Auth-Session-State', 1},
                  {'User-Identity', #{'Public-Identity' => [impu(User)]}},
                  {'User-Data', Xml}]);
        error -> "ERROR no data file for " ++ User
    end;
command(Other) -> io_lib:format("ERROR unknown command ~p", [Other]).

impu(User) -> list_to_binary(["sip:", User, "@test.local"]).

now_s() -> calendar:datetime_to_gregorian_seconds(calendar:universal_time()).

%% The subscriptions held: {Impu, Service-Indication} with the second they end (infinity for
%% none), those that ended dropped.
live_subs() ->
    [{subs, Subs}] = ets:lookup(hss, subs),
    Now = now_s(),
    [K || {K, Until} <- Subs, Until == infinity orelse Until > Now].

vsai() -> #{'Vendor-Id' => ?VENDOR_3GPP, 'Auth-Application-Id' => [?SH_APP]}.

user_data(User) ->
    [{dir, Dir}] = ets:lookup(hss, dir),
    case file:read_file(filename:join(Dir, User ++ ".xml")) of
        {ok, Xml} -> {ok, Xml};
        _ -> error
    end.

wait_up(0) -> "ERROR not up";
wait_up(N) ->
    case ets:lookup(hss, peers) of
        [{peers, [P | _]}] -> "UP " ++ P;
        _ -> timer:sleep(100), wait_up(N - 1)
    end.

call(Msg) ->
    case diameter:call(svc, sh, Msg, [{timeout, 5000}]) of
        {ok, #diameter_packet{} = P} -> describe(P);
        {error, R} -> io_lib:format("ERROR ~0p", [R]);
        Other -> io_lib:format("ERROR ~0p", [Other])
    end.

describe(#diameter_packet{header = H, msg = [_Name | Map], errors = Errs}) when is_map(Map) ->
    E = case H#diameter_header.is_error of true -> 1; _ -> 0 end,
    Rc = case maps:get('Result-Code', Map, []) of [C] -> C; C when is_integer(C) -> C; _ -> 0 end,
    Exp = case maps:get('Experimental-Result', Map, []) of
              [#{'Experimental-Result-Code' := X}] -> X;
              #{'Experimental-Result-Code' := X} -> X;
              _ -> 0
          end,
    Sid = maps:get('Session-Id', Map, <<>>),
    io_lib:format("ANSWER cmd=~p e=~p rc=~p exp=~p errors=~p sid=~s",
                  [H#diameter_header.cmd_code, E, Rc, Exp, length(Errs), Sid]);
describe(#diameter_packet{header = H}) ->
    io_lib:format("ANSWER cmd=~p undecoded", [H#diameter_header.cmd_code]).

%% ---------------- diameter callbacks ----------------
peer_up(_Svc, _Peer, State) -> State.
peer_down(_Svc, _Peer, State) -> State.
pick_peer([Peer | _], _, _Svc, _State) -> {ok, Peer};
pick_peer([], _, _Svc, _State) -> false.

prepare_request(#diameter_packet{msg = [Name | Avps]}, _Svc, {_, Caps}) ->
    #diameter_caps{origin_host = {OH, DH}, origin_realm = {OR, DR}} = Caps,
    {send, [Name, {'Session-Id', diameter:session_id(OH)}, {'Origin-Host', OH},
            {'Origin-Realm', OR}, {'Destination-Host', DH}, {'Destination-Realm', DR}
            | Avps]}.

prepare_retransmit(P, Svc, Peer) -> prepare_request(P, Svc, Peer).
handle_answer(#diameter_packet{} = P, _Req, _Svc, _Peer) -> {ok, P}.
handle_error(Reason, _Req, _Svc, _Peer) -> {error, Reason}.

%% UDR (TS 29.328 §6.1.1) and SNR (§6.1.3): the served user from User-Identity, the data asked
%% for by Data-Reference and Service-Indication.
handle_request(#diameter_packet{msg = [Cmd | Req], errors = Errs}, _Svc, {_, Caps})
  when Cmd == 'UDR'; Cmd == 'SNR' ->
    #diameter_caps{origin_host = {OH, _}, origin_realm = {OR, _}} = Caps,
    Impu = case maps:get('User-Identity', Req, #{}) of
               #{'Public-Identity' := [I]} -> binary_to_list(I);
               _ -> ""
           end,
    User = hd(string:split(lists:last(string:split(Impu, ":")), "@")),
    Drefs = maps:get('Data-Reference', Req, []),
    Sis = [binary_to_list(S) || S <- maps:get('Service-Indication', Req, [])],
    Repository = Drefs == [0] andalso Sis /= [],
    UserState = Cmd == 'UDR' andalso Drefs == [11] andalso Sis == [],
    Base = #{'Session-Id' => maps:get('Session-Id', Req), 'Auth-Session-State' => 1,
             'Origin-Host' => OH, 'Origin-Realm' => OR,
             'Vendor-Specific-Application-Id' => vsai()},
    {Outcome, Extra} =
        case {Cmd, Repository} of
            {'UDR', false} when UserState ->
                [{state, States}] = ets:lookup(hss, state),
                N = proplists:get_value(User, States, "1"),
                {{rc, 2001}, #{'User-Data' => [list_to_binary(
                    ["<?xml version=\"1.0\" encoding=\"UTF-8\"?><Sh-Data><Sh-IMS-Data>"
                     "<IMSUserState>", N, "</IMSUserState></Sh-IMS-Data></Sh-Data>"])]}};
            {_, false} -> {{exp, 5101}, #{}};
            {'UDR', true} ->
                [{udr, Table}] = ets:lookup(hss, udr),
                case {proplists:get_value(User, Table), user_data(User)} of
                    {undefined, {ok, Xml}} -> {{rc, 2001}, #{'User-Data' => [Xml]}};
                    {undefined, error} -> {{exp, 4100}, #{}};
                    {O, _} -> {O, #{}}
                end;
            {'SNR', true} ->
                Keys = [{Impu, S} || S <- Sis],
                [{expiry, Bounded}] = ets:lookup(hss, expiry),
                Secs = proplists:get_value(User, Bounded),
                Until = case Secs of undefined -> infinity; _ -> now_s() + Secs end,
                Subs0 = [{K, U} || {K, U} <- element(2, hd(ets:lookup(hss, subs))),
                                   lists:member(K, live_subs()), not lists:member(K, Keys)],
                Subs1 = case maps:get('Subs-Req-Type', Req) of
                            0 -> Subs0 ++ [{K, Until} || K <- Keys];
                            _ -> Subs0
                        end,
                ets:insert(hss, {subs, Subs1}),
                %% Expiry-Time (709, TS 29.329 §6.3; §6.1.6 for the SNA): when the subscription ends, UTC
                Expiry = case {maps:get('Subs-Req-Type', Req), Until} of
                             {0, U} when U /= infinity ->
                                 #{'Expiry-Time' => [calendar:gregorian_seconds_to_datetime(U)]};
                             _ -> #{}
                         end,
                {{rc, 2001}, Expiry}
        end,
    Shown = case Cmd of 'SNR' -> io_lib:format(" type=~p", [maps:get('Subs-Req-Type', Req, -1)]);
                        _ -> "" end,
    out("~s impu=~s~s dref=~w si=~s errors=~p -> ~s",
        [Cmd, Impu, Shown, Drefs, lists:join(",", Sis), length(Errs), outcome(Outcome)]),
    Ans = case Outcome of
              drop -> drop;
              {rc, C} -> maps:merge(Base#{'Result-Code' => [C]}, Extra);
              {exp, C} -> Base#{'Experimental-Result' =>
                                    [#{'Vendor-Id' => ?VENDOR_3GPP,
                                       'Experimental-Result-Code' => C}]}
          end,
    case Ans of
        drop -> discard;
        _ -> {reply, [case Cmd of 'UDR' -> 'UDA'; 'SNR' -> 'SNA' end | Ans]}
    end;
handle_request(#diameter_packet{msg = ['PUR' | Req], errors = Errs}, _Svc, {_, Caps}) ->
    #diameter_caps{origin_host = {OH, _}, origin_realm = {OR, _}} = Caps,
    Impu = case maps:get('User-Identity', Req, #{}) of
               #{'Public-Identity' := [I]} -> binary_to_list(I);
               _ -> ""
           end,
    User = hd(string:split(lists:last(string:split(Impu, ":")), "@")),
    Dref = maps:get('Data-Reference', Req, -1),
    Xml = maps:get('User-Data', Req, <<>>),
    Seq = fun(Doc) ->
              case re:run(Doc, "<SequenceNumber>([0-9]+)</SequenceNumber>",
                          [{capture, all_but_first, list}]) of
                  {match, [N]} -> list_to_integer(N);
                  _ -> none
              end
          end,
    New = Seq(Xml),
    Stored = case user_data(User) of {ok, Old} -> Seq(Old); error -> none end,
    Next = case Stored of none -> 0; 65535 -> 1; N -> N + 1 end,
    Outcome = case Dref == 0 andalso New == Next of
                  true ->
                      [{dir, Dir}] = ets:lookup(hss, dir),
                      ok = file:write_file(filename:join(Dir, User ++ ".xml"), Xml),
                      {rc, 2001};
                  false -> {exp, 5105}
              end,
    out("PUR impu=~s dref=~p seq=~p stored=~p errors=~p -> ~s",
        [Impu, Dref, New, Stored, length(Errs), outcome(Outcome)]),
    Base = #{'Session-Id' => maps:get('Session-Id', Req), 'Auth-Session-State' => 1,
             'Origin-Host' => OH, 'Origin-Realm' => OR,
             'Vendor-Specific-Application-Id' => vsai()},
    {reply, ['PUA' | case Outcome of
                         {rc, C} -> Base#{'Result-Code' => [C]};
                         {exp, C} -> Base#{'Experimental-Result' =>
                                               [#{'Vendor-Id' => ?VENDOR_3GPP,
                                                  'Experimental-Result-Code' => C}]}
                     end]};
handle_request(#diameter_packet{header = H}, _Svc, _Peer) ->
    out("REQUEST cmd=~p not served here: 3001", [H#diameter_header.cmd_code]),
    {answer_message, 3001}.

outcome(drop) -> "no answer";
outcome({rc, C}) -> io_lib:format("Result-Code ~p", [C]);
outcome({exp, C}) -> io_lib:format("Experimental-Result-Code ~p", [C]).
