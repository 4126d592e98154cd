# A real Elixir node as a notebook's "terminal window" (nodelab/jupyter/beam_windows.py).
#
# Run as `elixir --sname kate@localhost --cookie C --no-halt -e "<this file>"` (or with
# `-S mix run --no-halt` in a mix project). The notebook kernel types cells into the node
# through its stdin and reads the answers on its stdout:
#
#   stdin   "eval ID BASE64(code)"      evaluate a cell, like lines typed into iex
#           "interrupt ID"              kill the shell process if it still runs cell ID
#           end of input                the notebook kernel is gone: halt the node
#   stdout  "\x02TOKEN ID STATUS B64..." STATUS: ready | ok (inspect of the value) |
#                                        error (what iex prints for it)
#   stderr  "\x02TOKEN ID sync"         written just before the stdout answer, so the
#                                        notebook knows it has read every warning of the cell
#
# Everything else the node prints (IO.puts of the cell or of processes it spawned, Logger)
# is plain text on stdout/stderr: the notebook labels it `[kate@localhost] ...`. TOKEN comes
# from the environment (NODELAB_WINDOW_TOKEN), so no printed text can fake an answer.
#
# Like iex, one shell process evaluates the cells one after the other and keeps its
# variables, aliases, imports and mailbox between them (IEx.Helpers is imported: flush(),
# h(), i()...); an exit signal that kills it is reported as iex does and a fresh one (with
# no variables) takes its place. Its group leader forwards output to the node's stdout and
# answers input requests with {:error, :enotsup}: a cell must never read the notebook's
# requests.

defmodule NodelabWindow do
  @moduledoc false

  def main do
    token = System.fetch_env!("NODELAB_WINDOW_TOKEN")
    proxy = spawn(&proxy/0)
    manager = spawn(fn -> manage(token, proxy) end)
    spawn(fn -> read(manager) end)
    :ok
  end

  # --- stdin ---------------------------------------------------------------------------

  defp read(manager) do
    case IO.gets(:user, "") do
      line when is_binary(line) ->
        case String.split(String.trim_trailing(line), " ", parts: 3) do
          ["eval", id, code] -> send(manager, {:eval, id, Base.decode64!(code)})
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
      {:eval, id, code} ->
        next(token, proxy, current, busy, :queue.in({id, code}, waiting))

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
      {{:value, {id, code}}, waiting} ->
        send(shell, {:eval, self(), id, code})
        manage(token, proxy, current, id, waiting)

      {:empty, waiting} ->
        manage(token, proxy, current, nil, waiting)
    end
  end

  defp next(token, proxy, current, busy, waiting),
    do: manage(token, proxy, current, busy, waiting)

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

  # --- the shell's group leader: output to the node's stdout, no input ------------------

  defp proxy do
    receive do
      {:io_request, from, reply_as, request} ->
        send(from, {:io_reply, reply_as, io(request)})

      _other ->
        :ok
    end

    proxy()
  end

  defp io({:put_chars, _, _} = request), do: :io.request(:user, request)
  defp io({:put_chars, _, _, _, _} = request), do: :io.request(:user, request)
  defp io({:put_chars, _} = request), do: :io.request(:user, request)
  defp io({:put_chars, _, _, _} = request), do: :io.request(:user, request)
  defp io({:setopts, _}), do: :ok
  defp io(:getopts), do: :io.request(:user, :getopts)
  defp io({:get_geometry, _}), do: {:error, :enotsup}

  defp io({:requests, requests}) do
    Enum.reduce_while(requests, :ok, fn request, _ ->
      case io(request) do
        {:error, _} = error -> {:halt, error}
        other -> {:cont, other}
      end
    end)
  end

  defp io(_input), do: {:error, :enotsup}
end

NodelabWindow.main()
