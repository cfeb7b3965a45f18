#!/usr/bin/env escript
%%! -smp enable
%% tls_server.escript -- an Erlang/OTP diameter server with in-band TLS (RFC 3588 style:
%% diameter_tcp with {ssl_options, Opts} and Inband-Security-Id TLS advertised, the upgrade
%% following CER/CEA), for the bridge's TLS interop tests. Loopback only; exits by itself
%% after --seconds (default 60).
%%
%% tls_server.escript --port PORT --host ORIGIN_HOST --cert F --key F --ca F [--seconds 60]
%% Answers test_app Test-Requests (application 16777215) with 2001, echoing Test-AVP;
%% prints "listening" once the transport is up and "peer up" when a peer opens.
%%
%% --active-once 1 adds {active, once} to the ssl_options: the work-around for OTP 25's
%% race in diameter_tcp's server-side upgrade (see erlang_inband_tls_server_stock_otp in
%% bridge/tests/tls_inband.rs). To watch it: TLS_SERVER_DEBUG=1 logs the TLS records;
%% TLS_SERVER_TRACE=MS traces the socket options ssl:handshake finds, and MS milliseconds
%% after "peer up" prints the TLS socket's active mode and the transport's state (PROBE).
-mode(compile).
-export([main/1, peer_up/3, peer_down/3, pick_peer/4, prepare_request/3, prepare_retransmit/3,
         handle_answer/4, handle_error/4, handle_request/3]).

-include_lib("diameter/include/diameter.hrl").

-define(TA_DIA, <<"
@id 16777215
@name ta_dict
@prefix ta
@vendor 999999 TestVendor
@inherits diameter_gen_base_rfc6733
@avp_types
   Test-AVP 345678 Integer32 V
@messages
   TR ::= < Diameter Header: 16777214, REQ, PXY >
          < Session-Id >
          { Origin-Host }
          { Origin-Realm }
          { Destination-Realm }
          { Test-AVP }
          [ Destination-Host ]
        * [ AVP ]
   TA ::= < Diameter Header: 16777214, PXY >
          < Session-Id >
          { Result-Code }
          { Origin-Host }
          { Origin-Realm }
          { Test-AVP }
        * [ AVP ]
">>).

main(Args) ->
    O = parse(Args, #{}),
    {ok, [Forms | _]} = diameter_make:codec(?TA_DIA, [return, forms]),
    {ok, Mod, Bin} = compile:forms(Forms, [binary, return_errors]),
    {module, Mod} = code:load_binary(Mod, "ta_dict.erl", Bin),
    ok = ssl:start(),
    ok = diameter:start(),
    Host = maps:get(host, O),
    ok = diameter:start_service(svc, [
        {'Origin-Host', Host}, {'Origin-Realm', "test.local"},
        {'Vendor-Id', 0}, {'Product-Name', "erl-tls-server"},
        {'Host-IP-Address', [{127,0,0,1}]},
        {'Supported-Vendor-Id', [999999]},
        {'Auth-Application-Id', [16777215]},
        {decode_format, map}, {string_decode, false},
        {application, [{alias, ta}, {dictionary, ta_dict}, {module, ?MODULE}]}]),
    true = diameter:subscribe(svc),
    case os:getenv("TLS_SERVER_TRACE") of
        false -> ok;
        _ ->
            dbg:tracer(),
            dbg:p(all, c),
            dbg:tpl(tls_socket, getopts, 3, [{'_', [], [{return_trace}]}]),
            dbg:tpl(ssl, handshake, 2, [{'_', [], [{return_trace}]}]),
            dbg:tpl(diameter_tcp, setopts, 2, [{'_', [], [{return_trace}]}])
    end,
    Ssl = [{certfile, maps:get(cert, O)}, {keyfile, maps:get(key, O)},
           {cacertfile, maps:get(ca, O)}, {verify, verify_peer},
           {fail_if_no_peer_cert, true}, {versions, ['tlsv1.3', 'tlsv1.2']}]
          ++ [{active, once} || maps:get('active-once', O, "0") =:= "1"]
          ++ [{log_level, debug} || os:getenv("TLS_SERVER_DEBUG") =/= false],
    %% {ssl_options, List} without true: plain until CER/CEA agree on Inband-Security-Id TLS.
    {ok, _} = diameter:add_transport(svc, {listen,
        [{capabilities, [{'Inband-Security-Id', [1]}]}, {transport_module, diameter_tcp},
         {transport_config, [{ip, {127,0,0,1}},
                             {port, list_to_integer(maps:get(port, O))},
                             {ssl_options, Ssl}]}]}),
    io:format("listening~n"),
    Until = erlang:monotonic_time(millisecond)
        + 1000 * list_to_integer(maps:get(seconds, O, "60")),
    loop(Until).

loop(Until) ->
    Left = Until - erlang:monotonic_time(millisecond),
    receive
        #diameter_event{info = {up, _, _, _, _}} -> io:format("peer up~n"), probe(), loop(Until);
        #diameter_event{info = {up, _, _, _}} -> io:format("peer up~n"), loop(Until);
        #diameter_event{info = I} -> io:format("event ~0p~n", [I]), loop(Until)
    after max(Left, 0) -> halt(0)
    end.

probe() ->
    case os:getenv("TLS_SERVER_TRACE") of
        false -> ok;
        _ -> spawn(fun() ->
                 timer:sleep(list_to_integer(os:getenv("TLS_SERVER_TRACE"))),
                 [begin
                      io:format("PROBE ~p sock ~0p~n", [Pid, Sock]),
                      io:format("PROBE getopts ~0p~n", [catch ssl:getopts(Sock, [active, mode])]),
                      io:format("PROBE state ~0p~n", [catch sys:get_state(Pid, 1000)]),
                      io:format("PROBE queue ~0p~n", [process_info(Pid, [message_queue_len, messages])])
                  end || {{diameter_tcp, accept, {_, Sock}}, Pid} <- diameter_reg:match({diameter_tcp, accept, '_'}),
                         not is_port(Sock)]
             end)
    end.

parse(["--" ++ K, V | T], M) -> parse(T, M#{list_to_atom(K) => V});
parse([], M) -> M.

peer_up(_Svc, _Peer, State) -> State.
peer_down(_Svc, _Peer, State) -> State.
pick_peer([Peer | _], _, _Svc, _State) -> {ok, Peer}.
prepare_request(P, _Svc, _Peer) -> {send, P}.
prepare_retransmit(P, _Svc, _Peer) -> {send, P}.
handle_answer(#diameter_packet{msg = Msg}, _Req, _Svc, _Peer) -> {ok, Msg}.
handle_error(Reason, _Req, _Svc, _Peer) -> {error, Reason}.

handle_request(#diameter_packet{msg = ['TR' | Avps]}, _Svc, {_, Caps}) ->
    #diameter_caps{origin_host = {OH, _}, origin_realm = {OR, _}} = Caps,
    {reply, ['TA', {'Session-Id', maps:get('Session-Id', Avps)}, {'Result-Code', 2001},
             {'Origin-Host', OH}, {'Origin-Realm', OR},
             {'Test-AVP', maps:get('Test-AVP', Avps)}]};
handle_request(_Pkt, _Svc, _Peer) -> {answer_message, 3001}.
