# A real Elixir node as a notebook's "terminal window" (nodelab/jupyter/beam_windows.py).
#
# Run as `elixir --sname kate@localhost --cookie C --no-halt -e "<this file>"` (or with
# `-S mix run --no-halt` in a mix project). The notebook kernel types cells into the node
# through its stdin and reads the answers on its stdout:
#
#   stdin   "eval ID BASE64(code) [BASE64(term_to_binary(leader))]"
#                                        evaluate a cell, like lines typed into iex; with a
#                                        leader, the cell's output goes to that group leader
#           "interrupt ID"              kill the shell process if it still runs cell ID
#           end of input                the notebook kernel is gone: halt the node
#   stdout  "\x02TOKEN ID STATUS B64..." STATUS: ready | ok (inspect of the value) |
#                                        error (what iex prints for it)
#   stderr  "\x02TOKEN ID sync"         written just before the stdout answer, so the
#                                        notebook knows it has read every warning of the cell
#
# The cell's output (IO.puts of the cell and of processes it spawned, which inherit its
# group leader) goes to the cell's group leader: when the notebook is a named node, a group
# leader *on the notebook node*, reached over Erlang distribution (the leader of the eval
# line); otherwise, and if that leader cannot be reached, the node's stdout. Everything else
# the node prints (Logger, :stderr) is plain text on stdout/stderr. The notebook labels all
# of it `[kate@localhost] ...`. TOKEN comes from the environment (NODELAB_WINDOW_TOKEN), so
# no printed text can fake an answer.
#
# Like iex, one shell process evaluates the cells one after the other and keeps its
# variables, aliases, imports and mailbox between them (IEx.Helpers is imported: flush(),
# h(), i()...); an exit signal that kills it is reported as iex does and a fresh one (with
# no variables) takes its place. Its group leader, on this node, formats the output as the
# BEAM does (:io.format's directives included) and forwards the text to the cell's group
# leader, waiting for its answer, so a cell's prints are shown before its value; it answers
# input requests with {:error, :enotsup}: a cell must never read the notebook's requests.

defmodule NodelabWindow do
  @moduledoc false

  def main do
    token = System.fetch_env!("NODELAB_WINDOW_TOKEN")
    proxy = spawn(fn -> proxy(nil) end)
    manager = spawn(fn -> manage(token, proxy) end)
    spawn(fn -> read(manager) end)
    :ok
  end

  # --- stdin ---------------------------------------------------------------------------

  defp read(manager) do
    case IO.gets(:user, "") do
      line when is_binary(line) ->
        case String.split(String.trim_trailing(line), " ") do
          ["eval", id, code] -> send(manager, {:eval, id, Base.decode64!(code), nil})
          ["eval", id, code, leader] -> send(manager, {:eval, id, Base.decode64!(code), leader})
          ["interrupt", id] -> send(manager, {:interrupt, id})
          _ -> :ignored
        end

        read(manager)

      _eof_or_error ->
        # The notebook kernel closed our input (`%node stop`, its shutdown) or died: the
        # window is closed. Like iex when its terminal closes, the node halts at once
        # (System.stop would take a second or two to stop every application).
        System.halt(0)
    end
  end

  # --- the manager: one cell at a time, a new shell process when one dies ---------------

  defp manage(token, proxy) do
    {shell, ref} = start_shell(token, proxy)
    answer(token, "ready", "ok", [Atom.to_string(node())])
    manage(token, proxy, {shell, ref}, nil, :queue.new())
  end

  defp manage(token, proxy, {shell, ref} = current, busy, waiting) do
    receive do
      {:eval, id, code, leader} ->
        next(token, proxy, current, busy, :queue.in({id, code, leader}, waiting))

      {:done, id} when id == busy ->
        next(token, proxy, current, nil, waiting)

      {:interrupt, id} ->
        if id == busy, do: Process.exit(shell, :kill)
        manage(token, proxy, current, busy, waiting)

      {:DOWN, ^ref, :process, pid, reason} ->
        if busy do
          sync(token, busy)

          answer(token, busy, "error", [
            "** (EXIT from #{inspect(pid)}) shell process exited with reason: " <>
              Exception.format_exit(reason)
          ])
        end

        next(token, proxy, start_shell(token, proxy), nil, waiting)
    end
  end

  defp next(token, proxy, {shell, _} = current, nil, waiting) do
    case :queue.out(waiting) do
      {{:value, {id, code, leader}}, waiting} ->
        send(proxy, {:forward_to, cell_leader(leader)})
        send(shell, {:eval, self(), id, code})
        manage(token, proxy, current, id, waiting)

      {:empty, waiting} ->
        manage(token, proxy, current, nil, waiting)
    end
  end

  defp next(token, proxy, current, busy, waiting),
    do: manage(token, proxy, current, busy, waiting)

  # The notebook's group leader for this cell, if it is there to be reached: the node
  # dials the notebook node (same cookie) before the cell runs, not in its first print.
  defp cell_leader(nil), do: nil

  defp cell_leader(encoded) do
    # Not [:safe]: the pid names the notebook node, an atom this node may not have yet;
    # only the kernel that started this node writes on its stdin.
    leader = :erlang.binary_to_term(Base.decode64!(encoded))
    if is_pid(leader) and Node.connect(node(leader)) == true, do: leader, else: nil
  rescue
    _ -> nil
  end

  # --- the shell process ----------------------------------------------------------------

  defp start_shell(token, proxy) do
    spawn_monitor(fn ->
      Process.group_leader(self(), proxy)
      env = Code.env_for_eval(file: "iex")

      {_, _, env} =
        Code.eval_quoted_with_env(quote(do: import(IEx.Helpers, warn: false)), [], env)

      shell(token, [], env)
    end)
  end

  defp shell(token, binding, env) do
    receive do
      {:eval, manager, id, code} ->
        {status, text, binding, env} = evaluate(code, binding, env)
        sync(token, id)
        answer(token, id, status, [text])
        send(manager, {:done, id})
        shell(token, binding, env)
    end
  end

  defp evaluate(code, binding, env) do
    quoted = Code.string_to_quoted!(code, file: "iex", line: 1)
    {value, binding, env} = Code.eval_quoted_with_env(quoted, binding, env)
    {"ok", inspect(value, pretty: true, width: 80), binding, env}
  catch
    kind, reason ->
      stacktrace = __STACKTRACE__
      {reason, stacktrace} = Exception.blame(kind, reason, stacktrace)
      banner = Exception.format_banner(kind, reason, stacktrace)

      text =
        case prune(stacktrace) do
          [] -> banner
          frames -> banner <> "\n" <> String.trim_trailing(Exception.format_stacktrace(frames))
        end

      {"error", text, binding, env}
  end

  # What iex shows of a stack trace: the frames of the cell's code, none of the evaluator's
  # (IEx.Evaluator.prune_stacktrace/1 of Elixir 1.14, with this module as the evaluator).
  @internals [:elixir, :elixir_expand, :elixir_compiler, :elixir_module, :elixir_clauses] ++
               [:elixir_lexical, :elixir_def, :elixir_map, :elixir_erl, :elixir_erl_clauses] ++
               [:elixir_erl_pass]

  defp prune(stacktrace) do
    stacktrace
    |> Enum.reverse()
    |> Enum.drop_while(&(elem(&1, 0) in [:proc_lib, __MODULE__, Module.ParallelChecker, Code]))
    |> Enum.drop_while(&(elem(&1, 0) == :elixir))
    |> Enum.drop_while(&(elem(&1, 0) in [:erl_eval, :eval_bits]))
    |> Enum.reverse()
    |> Enum.reject(&(elem(&1, 0) in @internals))
  end

  # --- answers --------------------------------------------------------------------------

  defp answer(token, id, status, fields) do
    :io.put_chars(:user, [
      2,
      token,
      " ",
      id,
      " ",
      status,
      Enum.map(fields, &[" ", Base.encode64(&1)]),
      "\n"
    ])
  end

  defp sync(token, id), do: :io.put_chars(:standard_error, [2, token, " ", id, " sync\n"])

  # --- the shell's group leader: output to the cell's group leader, no input ------------

  # `leader`: the notebook's group leader of the running cell (nil: the node's stdout). The
  # manager sets it before each cell; processes spawned by earlier cells print through it
  # too, and the notebook keeps what comes between cells for its next look.
  defp proxy(leader) do
    receive do
      {:io_request, from, reply_as, request} ->
        send(from, {:io_reply, reply_as, io(request, leader)})
        proxy(leader)

      {:forward_to, new_leader} ->
        Process.put(:nodelab_cell_leader, new_leader)
        proxy(new_leader)

      _other ->
        proxy(leader)
    end
  end

  defp io({:put_chars, _, _} = request, leader), do: put(request, leader)
  defp io({:put_chars, _, _, _, _} = request, leader), do: put(request, leader)
  defp io({:put_chars, _} = request, leader), do: put(request, leader)
  defp io({:put_chars, _, _, _} = request, leader), do: put(request, leader)
  defp io({:setopts, _}, _leader), do: :ok
  defp io(:getopts, _leader), do: :io.request(:user, :getopts)
  defp io({:get_geometry, _}, _leader), do: {:error, :enotsup}

  defp io({:requests, requests}, leader) do
    Enum.reduce_while(requests, :ok, fn request, _ ->
      case io(request, leader) do
        {:error, _} = error -> {:halt, error}
        other -> {:cont, other}
      end
    end)
  end

  defp io(_input, _leader), do: {:error, :enotsup}

  defp put(request, nil), do: :io.request(:user, request)

  # The text is made here, as this node's io server would make it (io_lib:format and its
  # directives are the BEAM's), and goes to the leader as plain unicode text. If the text
  # cannot be made, or the leader is gone, the node's own io server gets the request: the
  # output is not lost, and an error is the one iex would give.
  defp put(request, leader) do
    with {:ok, text} <- text(request),
         :ok <- :io.request(leader, {:put_chars, :unicode, text}) do
      :ok
    else
      _ -> :io.request(:user, request)
    end
  end

  defp text(request) do
    {chars, encoding} =
      case request do
        {:put_chars, encoding, chars} -> {chars, encoding}
        {:put_chars, encoding, m, f, a} -> {apply(m, f, a), encoding}
        {:put_chars, chars} -> {chars, :latin1}
        {:put_chars, m, f, a} -> {apply(m, f, a), :latin1}
      end

    case :unicode.characters_to_binary(chars, encoding, :unicode) do
      text when is_binary(text) -> {:ok, text}
      _incomplete_or_error -> :error
    end
  catch
    _kind, _reason -> :error
  end
end

NodelabWindow.main()
